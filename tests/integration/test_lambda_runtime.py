"""The local stack's Lambda runtime, end to end through the public AWS APIs.

Each test deploys a tiny fixture zip with the Lambda API, wires it to a fresh Kinesis stream or
DynamoDB table with an event source mapping, writes records, and checks what the handler saw
(the handlers append every event they get to a JSON-lines file in the test's folder), what
reached the on-failure queue, CloudWatch Logs and the runtime's health report.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import socket
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from botocore.exceptions import ClientError

from deploy.provision import PROCESSED_KEY_SCHEMA
from helpers.core.errors import ResourceMissingError
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

pytestmark = pytest.mark.integration

T = TypeVar("T")
WAIT_SECONDS = 30.0
FIXTURE_HANDLERS = """
import base64, json, logging, os, time

log = logging.getLogger("fixture")
ENV_KEYS = ("MARKER", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_FUNCTION_NAME", "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID", "LAMBDA_TASK_ROOT", "PYTHONPATH", "STP_STREAM_NAME")


def _out(name):
    return os.path.join(os.environ["OUT_DIR"], name)


def _record(event, context):
    entry = {
        "request_id": context.aws_request_id, "pid": os.getpid(), "records": event.get("Records", []),
        "remaining_ms": context.get_remaining_time_in_millis(), "function_name": context.function_name,
        "memory": context.memory_limit_in_mb, "arn": context.invoked_function_arn,
        "log_group": context.log_group_name, "env": {k: os.environ.get(k) for k in ENV_KEYS},
        "cwd": os.getcwd(), "path0": __import__("sys").path[0],
    }
    with open(_out("calls.jsonl"), "a") as fh:
        fh.write(json.dumps(entry) + "\\n")


def _data(record):
    return base64.b64decode(record["kinesis"]["data"]).decode()


def record(event, context):
    print(f"fixture saw {len(event.get('Records', []))} records")
    log.warning("fixture warning for %s", context.aws_request_id)
    log.info("info is below the default level")
    _record(event, context)
    return {"ok": True}


def fail_once(event, context):
    _record(event, context)
    flag = _out("failed-once")
    for r in event["Records"]:
        if _data(r) == os.environ["FAIL_DATA"] and not os.path.exists(flag):
            open(flag, "w").close()
            return {"batchItemFailures": [{"itemIdentifier": r["kinesis"]["sequenceNumber"]}]}
    return {"batchItemFailures": []}


def slow_once(event, context):
    _record(event, context)
    flag = _out("slept")
    if not os.path.exists(flag):
        open(flag, "w").close()
        print("sleeping past the timeout")
        time.sleep(30)
    return None


def poison(event, context):
    _record(event, context)
    if any("poison" in _data(r) for r in event["Records"]):
        raise ValueError("poison record")
    return None


def s3_put(event, context):
    import boto3

    s3 = boto3.client("s3")
    s3.put_object(Bucket=os.environ["BUCKET"], Key=event["key"], Body=b"written by the function")
    return {"pid": os.getpid(), "marker": os.environ.get("MARKER")}
"""


# --- helpers ----------------------------------------------------------------------------------


def wait_until(check: Callable[[], T], what: str, timeout: float = WAIT_SECONDS) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def calls(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def decoded(call: dict[str, Any]) -> list[str]:
    return [base64.b64decode(r["kinesis"]["data"]).decode() for r in call["records"]]


def runtime_health(settings: Settings) -> dict[str, Any]:
    from deploy.local import status

    health = status(settings).health or {}
    return dict(health.get("components", {}).get("lambda", {}))


def mapping_health(settings: Settings, mapping_uuid: str) -> dict[str, Any]:
    return dict(runtime_health(settings).get("mappings", {}).get(mapping_uuid, {}))


@pytest.fixture(scope="module")
def c(local_stack: Settings) -> SimpleNamespace:
    """Clients for the session's stack, and ``undo``: what each test created, to delete after it."""
    services = ("lambda", "kinesis", "dynamodb", "sqs", "s3", "logs", "iam")
    clients = {name.replace("lambda", "lam"): aws.client(name, local_stack) for name in services}
    return SimpleNamespace(undo=[], **clients)


@pytest.fixture(autouse=True)
def _tidy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Leave the shared session stack as we found it (other tests list its resources)."""
    yield
    if "c" in request.fixturenames:
        c = request.getfixturevalue("c")
        for undo in reversed(c.undo):
            with contextlib.suppress(ClientError):
                undo()
        c.undo.clear()


@pytest.fixture(scope="module")
def role_arn(c: SimpleNamespace) -> Iterator[str]:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = c.iam.create_role(RoleName=unique("runtime-test"), AssumeRolePolicyDocument=json.dumps(trust))
    yield str(role["Role"]["Arn"])
    c.iam.delete_role(RoleName=role["Role"]["RoleName"])


@pytest.fixture(scope="module")
def fixture_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fixture.py", FIXTURE_HANDLERS)
    return buffer.getvalue()


def deploy(
    c: SimpleNamespace, role: str, code: bytes, handler: str, env: dict[str, str], timeout: int = 3
) -> str:
    name = unique("fx")
    c.lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler=f"fixture.{handler}",
        Code={"ZipFile": code},
        Timeout=timeout,
        Environment={"Variables": env},
    )
    c.undo.append(lambda: c.lam.delete_function(FunctionName=name))
    return name


def stream(c: SimpleNamespace) -> tuple[str, str]:
    name = unique("st")
    c.kinesis.create_stream(StreamName=name, ShardCount=1)
    c.undo.append(lambda: c.kinesis.delete_stream(StreamName=name))
    return name, str(
        c.kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    )


def queue(c: SimpleNamespace) -> tuple[str, str]:
    url = c.sqs.create_queue(QueueName=unique("fail"))["QueueUrl"]
    c.undo.append(lambda: c.sqs.delete_queue(QueueUrl=url))
    return url, str(
        c.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    )


def put(c: SimpleNamespace, stream_name: str, data: list[str], key: str = "AAPL") -> list[str]:
    records = [{"Data": d.encode(), "PartitionKey": key} for d in data]
    return [
        r["SequenceNumber"] for r in c.kinesis.put_records(StreamName=stream_name, Records=records)["Records"]
    ]


def map_stream(c: SimpleNamespace, function: str, source_arn: str, **settings: Any) -> str:
    params: dict[str, Any] = {"StartingPosition": "TRIM_HORIZON", "BatchSize": 10, **settings}
    uuid_ = str(
        c.lam.create_event_source_mapping(FunctionName=function, EventSourceArn=source_arn, **params)["UUID"]
    )
    c.undo.append(lambda: c.lam.delete_event_source_mapping(UUID=uuid_))
    return uuid_


def failure_messages(c: SimpleNamespace, url: str, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    def receive() -> bool:
        for message in c.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            got.append(json.loads(message["Body"]))
            c.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= count

    wait_until(receive, f"{count} on-failure messages")
    return got


def delivered(out: Path, count: int) -> list[dict[str, Any]]:
    """Wait until the handler has seen ``count`` records in total; return its calls."""

    def enough() -> list[dict[str, Any]] | None:
        got = calls(out)
        return got if sum(len(x["records"]) for x in got) >= count else None

    return wait_until(enough, f"{count} records delivered")


def invocations(out: Path, count: int) -> list[dict[str, Any]]:
    """Wait until the handler has been called ``count`` times; return its calls."""
    return wait_until(lambda: got if len(got := calls(out)) >= count else None, f"{count} invocations")


def settled(settings: Settings, mapping_uuid: str, records_ok: int) -> dict[str, Any]:
    """Wait until the runtime reports ``records_ok`` records processed for the mapping."""

    def done() -> dict[str, Any] | None:
        health = mapping_health(settings, mapping_uuid)
        return health if health.get("records_ok") == records_ok else None

    return wait_until(done, f"the runtime to report {records_ok} records processed")


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


def test_report_batch_item_failures_retries_from_the_failed_record_only(
    c: SimpleNamespace, local_stack: Settings, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "fail_once", {"OUT_DIR": str(tmp_path), "FAIL_DATA": "r3"})
    stream_name, stream_arn = stream(c)
    mapping = map_stream(
        c,
        function,
        stream_arn,
        MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    put(c, stream_name, [f"r{i}" for i in range(6)])

    got = invocations(tmp_path, 2)

    assert decoded(got[0]) == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert decoded(got[1]) == ["r3", "r4", "r5"]  # r0..r2 are never delivered again
    health = settled(local_stack, mapping, 6)
    shard = health["shards"]["shardId-000000000000"]
    assert (shard["partial_failures"], shard["checkpoint"], shard["function_errors"]) == (1, 6, 0)
    assert len(calls(tmp_path)) == 2


def test_timeout_kills_the_worker_and_counts_as_a_retry(
    c: SimpleNamespace, local_stack: Settings, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "slow_once", {"OUT_DIR": str(tmp_path)}, timeout=1)
    stream_name, stream_arn = stream(c)
    mapping = map_stream(c, function, stream_arn, MaximumRetryAttempts=2, MaximumBatchingWindowInSeconds=1)
    put(c, stream_name, ["a", "b", "c"])

    got = wait_until(
        lambda: (lambda x: x if len(x) >= 2 else None)(calls(tmp_path)), "the retry after the timeout"
    )
    health = settled(local_stack, mapping, 3)

    assert decoded(got[0]) == decoded(got[1]) == ["a", "b", "c"]
    assert got[0]["pid"] != got[1]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(got[0]["pid"], 0)  # the timed-out worker was killed (and reaped)
    shard = health["shards"]["shardId-000000000000"]
    assert (shard["function_errors"], shard["retries"], shard["records_discarded"]) == (1, 1, 0)
    assert "Sandbox.Timedout" in shard["last_error"]
    messages = [
        e["message"] for e in c.logs.filter_log_events(logGroupName=f"/aws/lambda/{function}")["events"]
    ]
    assert any(m.endswith(f"{got[0]['request_id']} Task timed out after 1.00 seconds") for m in messages)
    assert "sleeping past the timeout" in messages
    assert any(
        m.startswith(f"REPORT RequestId: {got[0]['request_id']}") and "Status: timeout" in m for m in messages
    )


def test_exhausted_retries_send_the_batch_metadata_to_the_on_failure_queue(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "poison", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    url, queue_arn = queue(c)
    map_stream(
        c,
        function,
        stream_arn,
        MaximumRetryAttempts=1,
        BisectBatchOnFunctionError=False,
        MaximumBatchingWindowInSeconds=1,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    sequence_numbers = put(c, stream_name, ["a", "poison", "b"])

    [message] = failure_messages(c, url, 1)
    put(c, stream_name, ["after"])  # the shard moved past the discarded batch
    got = delivered(tmp_path, 7)

    assert [decoded(x) for x in got] == [["a", "poison", "b"], ["a", "poison", "b"], ["after"]]
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 2
    assert message["requestContext"]["functionArn"].endswith(f":function:{function}")
    assert message["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert message["version"] == "1.0" and message["timestamp"].endswith("Z")
    info = message["KinesisBatchInfo"]
    assert (info["shardId"], info["streamArn"], info["batchSize"]) == ("shardId-000000000000", stream_arn, 3)
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (
        sequence_numbers[0],
        sequence_numbers[-1],
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info["approximateArrivalOfFirstRecord"])


def test_bisect_isolates_the_poison_record(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "poison", {"OUT_DIR": str(tmp_path)})
    stream_name, stream_arn = stream(c)
    url, queue_arn = queue(c)
    map_stream(
        c,
        function,
        stream_arn,
        MaximumRetryAttempts=0,
        BisectBatchOnFunctionError=True,
        MaximumBatchingWindowInSeconds=1,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    sequence_numbers = put(c, stream_name, ["a", "b", "poison", "c"])

    [message] = failure_messages(c, url, 1)
    got = delivered(tmp_path, 10)

    assert [decoded(x) for x in got] == [
        ["a", "b", "poison", "c"],
        ["a", "b"],
        ["poison", "c"],
        ["poison"],
        ["c"],
    ]
    info = message["KinesisBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == sequence_numbers[2]


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


# --- logs, Invoke API, environment ----------------------------------------------------------------


def test_invocation_logs_are_readable_with_filter_log_events(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    response = c.lam.invoke(FunctionName=function, Payload=json.dumps({"Records": []}).encode())
    request_id = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    group = f"/aws/lambda/{function}"

    def reported() -> list[dict[str, Any]] | None:
        events = c.logs.filter_log_events(logGroupName=group)["events"]
        return events if any(e["message"].startswith("REPORT") for e in events) else None

    events = wait_until(reported, "the REPORT line")

    messages = [e["message"] for e in events]
    start = messages.index(f"START RequestId: {request_id} Version: $LATEST")
    end = messages.index(f"END RequestId: {request_id}")
    own = messages[start + 1 : end]
    assert own[0] == "fixture saw 0 records"
    assert re.fullmatch(
        rf"\[WARNING\]\t[\d:.T-]{{23}}Z\t{request_id}\tfixture warning for {request_id}",
        own[1],
    )
    assert not any("below the default level" in m for m in messages)  # root logger at WARNING, as on AWS
    report = messages[end + 1]
    assert re.match(
        rf"REPORT RequestId: {request_id}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB",
        report,
    )
    assert "Init Duration" in report and messages[0].startswith("INIT_START")
    [stream_name] = {e["logStreamName"] for e in events}
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", stream_name)


def test_invoke_api_runs_the_deployed_zip_with_its_environment(
    c: SimpleNamespace, local_stack: Settings, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    bucket = unique("fx-bucket")
    c.s3.create_bucket(Bucket=bucket)
    c.undo.append(lambda: [c.s3.delete_object(Bucket=bucket, Key=k) for k in ("first", "second", "async")])
    c.undo.append(lambda: c.s3.delete_bucket(Bucket=bucket))
    function = deploy(
        c, role_arn, fixture_zip, "s3_put", {"OUT_DIR": str(tmp_path), "MARKER": "one", "BUCKET": bucket}
    )

    first = c.lam.invoke(FunctionName=function, Payload=b'{"key": "first"}', LogType="Tail")
    c.lam.update_function_configuration(
        FunctionName=function, Environment={"Variables": {"MARKER": "two", "BUCKET": bucket}}
    )
    second = c.lam.invoke(FunctionName=function, Payload=b'{"key": "second"}')
    queued = c.lam.invoke(FunctionName=function, InvocationType="Event", Payload=b'{"key": "async"}')
    dry = c.lam.invoke(FunctionName=function, InvocationType="DryRun")

    one, two = json.loads(first["Payload"].read()), json.loads(second["Payload"].read())
    assert (first["StatusCode"], first["ExecutedVersion"], "FunctionError" in first) == (
        200,
        "$LATEST",
        False,
    )
    assert one["marker"] == "one" and two["marker"] == "two"
    assert one["pid"] != two["pid"]  # a configuration change starts a fresh worker
    tail = base64.b64decode(first["LogResult"]).decode()
    assert "START RequestId:" in tail and "REPORT RequestId:" in tail
    assert c.s3.get_object(Bucket=bucket, Key="first")["Body"].read() == b"written by the function"
    assert (queued["StatusCode"], dry["StatusCode"]) == (202, 204)
    wait_until(
        lambda: c.s3.list_objects_v2(Bucket=bucket, Prefix="async").get("KeyCount"), "the async invocation"
    )


def test_invoke_api_reports_function_and_init_errors(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    failing = deploy(c, role_arn, fixture_zip, "poison", {"OUT_DIR": str(tmp_path)})
    missing = deploy(c, role_arn, fixture_zip, "no_such_handler", {"OUT_DIR": str(tmp_path)})
    event = {"Records": [{"kinesis": {"data": base64.b64encode(b"poison").decode()}}]}

    raised = c.lam.invoke(FunctionName=failing, Payload=json.dumps(event).encode())
    not_found = c.lam.invoke(FunctionName=missing, Payload=b"{}")

    error = json.loads(raised["Payload"].read())
    assert raised["FunctionError"] == "Unhandled"
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "poison record")
    assert any("raise ValueError" in line for line in error["stackTrace"])
    init_error = json.loads(not_found["Payload"].read())
    assert not_found["FunctionError"] == "Unhandled"
    assert init_error["errorType"] == "Runtime.HandlerNotFound"
    with pytest.raises(ClientError) as err:
        c.lam.invoke(FunctionName=unique("absent"), Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


AWS_RUNTIME_ONLY = """
import importlib.metadata, importlib.util, sys
import boto3

s3 = boto3.client("s3")


def handler(event, context):
    return {
        "buckets": isinstance(s3.list_buckets()["Buckets"], list),
        "boto3": importlib.metadata.version("boto3"),
        "path": sys.path,
        "found": {n: importlib.util.find_spec(n) is not None for n in ("pandas", "matplotlib", "helpers")},
    }
"""


def _zip_of(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fixture.py", source)
    return buffer.getvalue()


def test_workers_see_only_boto3_and_its_dependencies_besides_the_code(
    c: SimpleNamespace, local_stack: Settings, role_arn: str
) -> None:
    """As on AWS: a handler importing pandas fails to init; boto3 (with its metadata) works."""
    import boto3

    with_pandas = deploy(c, role_arn, _zip_of("import pandas\n\nhandler = print\n"), "handler", {})
    aws_only = deploy(c, role_arn, _zip_of(AWS_RUNTIME_ONLY), "handler", {})

    failed = c.lam.invoke(FunctionName=with_pandas, Payload=b"{}")
    worked = c.lam.invoke(FunctionName=aws_only, Payload=b"{}")

    init_error = json.loads(failed["Payload"].read())
    assert failed["FunctionError"] == "Unhandled"
    assert (init_error["errorType"], init_error["errorMessage"]) == (
        "Runtime.ImportModuleError",
        "Unable to import module 'fixture': No module named 'pandas'",
    )
    assert "FunctionError" not in worked
    got = json.loads(worked["Payload"].read())
    assert got["buckets"] is True and got["boto3"] == boto3.__version__
    assert got["found"] == {"pandas": False, "matplotlib": False, "helpers": False}
    code_dir, runtime_dir, *stdlib = got["path"]
    assert Path(code_dir).is_relative_to(Path(local_stack.state_dir) / "lambda" / aws_only)
    assert Path(runtime_dir) == Path(local_stack.state_dir) / "lambda" / ".runtime-packages"
    assert not [p for p in stdlib if "site-packages" in p]


def test_down_leaves_no_worker_processes(role_arn: str, fixture_zip: bytes, tmp_path: Path) -> None:
    from deploy.local import down, up

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    settings = load_settings(local_port=port, state_dir=str(tmp_path / "state"))
    up(settings)
    try:
        c = SimpleNamespace(lam=aws.client("lambda", settings), iam=aws.client("iam", settings), undo=[])
        role = c.iam.create_role(RoleName="down-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        function = deploy(c, role, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
        c.lam.invoke(FunctionName=function, Payload=b"{}")
        pid = calls(tmp_path)[0]["pid"]
        os.kill(pid, 0)  # alive and warm
    finally:
        down(settings)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, f"worker {pid} to exit with the stack", timeout=10)


# --- deploy_functions ------------------------------------------------------------------------------


@pytest.fixture
def pipeline(local_stack: Settings, c: SimpleNamespace, tmp_path: Path) -> Settings:
    """Settings naming a fresh stream, table, queue and roles on the session's stack (not created yet)."""
    tag = uuid.uuid4().hex[:6]
    return load_settings(
        local_port=local_stack.local_port,
        state_dir=str(tmp_path / "state"),
        stream_name=f"dq-{tag}",
        table_name=f"dp-{tag}",
        failure_queue_name=f"df-{tag}",
        processor_function=f"dproc-{tag}",
        trend_function=f"dtrend-{tag}",
        processor_role=f"dproc-role-{tag}",
        trend_role=f"dtrend-role-{tag}",
    )


def _fake_handlers(version: str) -> Callable[[str, Any], Path]:
    """A stand-in for build_zip: recording handlers under the real handler names."""

    def build(function: str, out_dir: Any) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{function}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name in ("lambda_src/__init__.py", f"lambda_src/{function}.py"):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                body = (
                    ""
                    if name.endswith("__init__.py")
                    else FIXTURE_HANDLERS + f"\nhandler = record  # {version}\n"
                )
                archive.writestr(info, body)
        return path

    return build


def test_deploy_functions_is_idempotent_and_wires_both_streams(
    pipeline: Settings, c: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from deploy import functions

    monkeypatch.setattr(functions, "build_zip", _fake_handlers("v1"))
    with pytest.raises(ResourceMissingError, match="run 01_provision first"):
        functions.deploy_functions(pipeline)
    for role in (pipeline.processor_role, pipeline.trend_role):
        c.iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
        c.undo.append(lambda role=role: c.iam.delete_role(RoleName=role))
    c.kinesis.create_stream(StreamName=pipeline.stream_name, ShardCount=2)
    c.undo.append(lambda: c.kinesis.delete_stream(StreamName=pipeline.stream_name))
    c.dynamodb.create_table(
        TableName=pipeline.table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "symbol", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "symbol", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    c.undo.append(lambda: c.dynamodb.delete_table(TableName=pipeline.table_name))
    queue_url = c.sqs.create_queue(QueueName=pipeline.failure_queue_name)["QueueUrl"]
    c.undo.append(lambda: c.sqs.delete_queue(QueueUrl=queue_url))

    first = functions.deploy_functions(pipeline)
    again = functions.deploy_functions(pipeline)
    monkeypatch.setattr(functions, "build_zip", _fake_handlers("v2"))
    changed = functions.deploy_functions(pipeline, functions=["processor"])

    assert {k: v["action"] for k, v in first["functions"].items()} == {
        "processor": "created",
        "trend": "created",
    }
    assert {k: v["action"] for k, v in again["functions"].items()} == {
        "processor": "unchanged",
        "trend": "unchanged",
    }
    assert {k: v["action"] for k, v in again["mappings"].items()} == {
        "processor": "unchanged",
        "trend": "unchanged",
    }
    assert changed["functions"]["processor"]["action"] == "code"
    assert changed["functions"]["processor"]["code_sha256"] != first["functions"]["processor"]["code_sha256"]
    for kind, name in (("processor", pipeline.processor_function), ("trend", pipeline.trend_function)):
        [mapping] = c.lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
        assert mapping["UUID"] == first["mappings"][kind]["uuid"]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert (mapping["BisectBatchOnFunctionError"], mapping["MaximumRetryAttempts"]) == (True, 3)
        assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == first["failure_queue_arn"]
        config = c.lam.get_function_configuration(FunctionName=name)
        assert config["Handler"] == f"lambda_src.{kind}.handler"
        assert config["Environment"]["Variables"] == pipeline.lambda_environment()
    assert first["mappings"]["processor"]["source_arn"].endswith(f":stream/{pipeline.stream_name}")
    assert c.lam.get_event_source_mapping(UUID=first["mappings"]["processor"]["uuid"])["BatchSize"] == 500

    removed = functions.remove_functions(pipeline)
    assert {k: v["function"] for k, v in removed.items()} == {"processor": "deleted", "trend": "deleted"}
    assert functions.remove_functions(pipeline)["processor"]["function"] == "absent"
