"""The fault injector against the session's real stack, through boto3 clients (retries off).

Every test aims its rules at resources of its own (``resource`` globs) and the ``faults`` fixture
clears the plan in ``finally``, so the shared stack is left without faults for other tests.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from deploy.local import down, status, up
from deploy.local.faults import FaultSpecError, clear_faults, faults_applied, get_faults, set_faults
from helpers.pipeline.config import PROJECT_ROOT, Settings, load_settings

pytestmark = pytest.mark.integration

SLEEPY_HANDLER = """
import json, os, time

def handler(event, context):
    with open(os.path.join(os.environ["OUT_DIR"], "calls.jsonl"), "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "n": len(event.get("Records", []))}) + "\\n")
    time.sleep(0.5)
    return None
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def c(local_stack: Settings) -> SimpleNamespace:
    """Clients without retries, so each injected error surfaces as a ClientError."""
    config = Config(retries={"total_max_attempts": 1}, region_name=local_stack.region)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    names = ("kinesis", "dynamodb", "s3", "sqs", "sns", "lambda", "iam")
    made = {
        n.replace("lambda", "lam"): session.client(
            n, endpoint_url=local_stack.resolved_endpoint, config=config
        )
        for n in names
    }
    return SimpleNamespace(undo=[], **made)  # undo: conftest's tidy-up list (unused here)


@pytest.fixture
def faults(local_stack: Settings) -> Iterator[Callable[[dict[str, Any]], dict[str, Any]]]:
    """``faults(spec)`` sets a plan on the session stack; cleared after the test, whatever happens."""
    try:
        yield lambda spec: set_faults(local_stack, spec)
    finally:
        clear_faults(local_stack)


@pytest.fixture(scope="module")
def res(c: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """A stream, a table, two buckets, a queue and a topic of this module's own."""
    r = SimpleNamespace(
        stream=unique("fault-st"), table=unique("fault-tb"), bucket=unique("fault-raw"),
        other_bucket=unique("fault-other"), queue=unique("fault-q"), topic=unique("fault-tp"),
    )  # fmt: skip
    c.kinesis.create_stream(StreamName=r.stream, ShardCount=1)
    c.dynamodb.create_table(
        TableName=r.table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    c.s3.create_bucket(Bucket=r.bucket)
    c.s3.create_bucket(Bucket=r.other_bucket)
    r.queue_url = c.sqs.create_queue(QueueName=r.queue)["QueueUrl"]
    r.topic_arn = c.sns.create_topic(Name=r.topic)["TopicArn"]
    yield r
    c.kinesis.delete_stream(StreamName=r.stream)
    c.dynamodb.delete_table(TableName=r.table)
    for bucket in (r.bucket, r.other_bucket):
        for obj in c.s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            c.s3.delete_object(Bucket=bucket, Key=obj["Key"])
        c.s3.delete_bucket(Bucket=bucket)
    c.sqs.delete_queue(QueueUrl=r.queue_url)
    c.sns.delete_topic(TopicArn=r.topic_arn)


def stream_data(c: SimpleNamespace, stream: str) -> list[str]:
    shard = c.kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    it = c.kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return [r["Data"].decode() for r in c.kinesis.get_records(ShardIterator=it["ShardIterator"])["Records"]]


CALLS: dict[str, Callable[[SimpleNamespace, SimpleNamespace], Any]] = {
    "kinesis": lambda c, r: c.kinesis.put_record(StreamName=r.stream, Data=b"x", PartitionKey="p"),
    "dynamodb": lambda c, r: c.dynamodb.put_item(TableName=r.table, Item={"pk": {"S": "x"}}),
    "s3": lambda c, r: c.s3.put_object(Bucket=r.bucket, Key="k.json", Body=b"x" * 70_000),
    "sqs": lambda c, r: c.sqs.send_message(QueueUrl=r.queue_url, MessageBody="m"),
    "sns": lambda c, r: c.sns.publish(TopicArn=r.topic_arn, Message="m"),
}


@pytest.mark.parametrize(
    ("service", "code", "status"),
    [
        ("kinesis", "ProvisionedThroughputExceededException", 400),
        ("kinesis", "InternalFailureException", 500),
        ("dynamodb", "ProvisionedThroughputExceededException", 400),
        ("dynamodb", "ThrottlingException", 400),
        ("dynamodb", "InternalServerError", 500),
        ("s3", "SlowDown", 503),
        ("s3", "InternalError", 500),
        ("s3", "AccessDenied", 403),
        ("sqs", "RequestThrottled", 400),
        ("sns", "Throttled", 429),
    ],
)
def test_each_error_is_parsed_by_boto3_with_its_code(
    c: SimpleNamespace,
    res: SimpleNamespace,
    faults: Callable[..., Any],
    local_stack: Settings,
    service: str,
    code: str,
    status: int,
) -> None:
    resource = {
        "kinesis": res.stream,
        "dynamodb": res.table,
        "s3": res.bucket,
        "sqs": res.queue,
        "sns": res.topic,
    }
    faults({"rules": [{"service": service, "resource": resource[service], "error": {"code": code}}]})
    with pytest.raises(ClientError) as caught:
        CALLS[service](c, res)
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    clear_faults(local_stack)
    CALLS[service](c, res)  # the same call succeeds once the plan is cleared


def test_put_records_entries_fail_and_are_not_stored(
    c: SimpleNamespace, res: SimpleNamespace, faults: Callable[..., Any], local_stack: Settings
) -> None:
    stream = unique("fault-pr")
    c.kinesis.create_stream(StreamName=stream, ShardCount=1)
    try:
        faults({"seed": 3, "rules": [{"service": "kinesis", "operation": "PutRecords", "resource": stream,
                                      "entry_error": {"rate": 0.4}}]})  # fmt: skip
        sent = [f"r{i}" for i in range(30)]
        answer = c.kinesis.put_records(
            StreamName=stream, Records=[{"Data": d.encode(), "PartitionKey": "AAPL"} for d in sent]
        )
        failed = [d for d, slot in zip(sent, answer["Records"], strict=True) if "ErrorCode" in slot]
        codes = {slot.get("ErrorCode") for slot in answer["Records"]} - {None}
        assert codes == {"ProvisionedThroughputExceededException"}
        assert 0 < len(failed) < len(sent) and answer["FailedRecordCount"] == len(failed)
        assert all(
            "SequenceNumber" in s and "ShardId" in s for s in answer["Records"] if "ErrorCode" not in s
        )
        assert stream_data(c, stream) == [d for d in sent if d not in failed]  # order kept, failed absent
        assert get_faults(local_stack)["rules"][0]["counters"]["failed_entries"] == len(failed)
    finally:
        c.kinesis.delete_stream(StreamName=stream)


def test_batch_write_leaves_unprocessed_items_unapplied(
    c: SimpleNamespace, res: SimpleNamespace, faults: Callable[..., Any], local_stack: Settings
) -> None:
    faults({"seed": 4, "rules": [{"service": "dynamodb", "operation": "BatchWriteItem", "resource": res.table,
                                  "unprocessed": {"rate": 0.5}}]})  # fmt: skip
    keys = [f"b{i}" for i in range(20)]
    answer = c.dynamodb.batch_write_item(
        RequestItems={res.table: [{"PutRequest": {"Item": {"pk": {"S": k}}}} for k in keys]}
    )
    left = {item["PutRequest"]["Item"]["pk"]["S"] for item in answer["UnprocessedItems"].get(res.table, [])}
    assert 0 < len(left) < len(keys)
    stored = {
        i["pk"]["S"] for i in c.dynamodb.scan(TableName=res.table)["Items"] if i["pk"]["S"].startswith("b")
    }
    assert stored == set(keys) - left
    assert get_faults(local_stack)["rules"][0]["counters"]["unprocessed_items"] == len(left)


def test_one_partition_fails_permanently_others_succeed(
    c: SimpleNamespace, res: SimpleNamespace, faults: Callable[..., Any], local_stack: Settings
) -> None:
    faults(
        {
            "rules": [
                {
                    "service": "s3",
                    "operation": "PutObject",
                    "resource": res.bucket,
                    "key_contains": "symbol=BAD/",
                    "error": {"code": "AccessDenied", "rate": 1.0},
                }
            ]
        }
    )
    for attempt in range(3):
        with pytest.raises(ClientError, match="AccessDenied"):
            c.s3.put_object(Bucket=res.bucket, Key=f"raw/symbol=BAD/{attempt}.json", Body=b"x")
    c.s3.put_object(Bucket=res.bucket, Key="raw/symbol=GOOD/0.json", Body=b"x")
    c.s3.put_object(Bucket=res.other_bucket, Key="raw/symbol=BAD/0.json", Body=b"x")  # another pipeline
    keys = [o["Key"] for o in c.s3.list_objects_v2(Bucket=res.bucket, Prefix="raw/")["Contents"]]
    assert keys == ["raw/symbol=GOOD/0.json"]
    assert c.s3.head_object(Bucket=res.other_bucket, Key="raw/symbol=BAD/0.json")["ContentLength"] == 1


def test_latency_is_added_to_the_chosen_operation_only(
    c: SimpleNamespace, res: SimpleNamespace, faults: Callable[..., Any], local_stack: Settings
) -> None:
    faults(
        {
            "rules": [
                {"service": "dynamodb", "operation": "GetItem", "resource": res.table, "latency": {"ms": 300}}
            ]
        }
    )
    started = time.monotonic()
    c.dynamodb.get_item(TableName=res.table, Key={"pk": {"S": "none"}})
    slow = time.monotonic() - started
    started = time.monotonic()
    c.dynamodb.describe_table(TableName=res.table)
    fast = time.monotonic() - started
    assert slow >= 0.3 > fast
    counters = get_faults(local_stack)["rules"][0]["counters"]
    assert (counters["seen"], counters["delayed"], counters["latency_ms"]) == (1, 1, 300)


def test_the_same_seed_gives_the_same_faults(
    c: SimpleNamespace, res: SimpleNamespace, faults: Callable[..., Any]
) -> None:
    def pattern(seed: int) -> list[bool]:
        faults(
            {
                "seed": seed,
                "rules": [
                    {
                        "service": "sqs",
                        "resource": res.queue,
                        "error": {"code": "RequestThrottled", "rate": 0.5},
                    }
                ],
            }
        )
        got = []
        for _ in range(24):
            try:
                c.sqs.send_message(QueueUrl=res.queue_url, MessageBody="m")
                got.append(False)
            except ClientError:
                got.append(True)
        return got

    first = pattern(21)
    assert 0 < sum(first) < 24
    assert pattern(21) == first
    assert pattern(22) != first


def test_status_cli_and_clear_show_the_plan_and_counters(
    c: SimpleNamespace, res: SimpleNamespace, local_stack: Settings
) -> None:
    spec = {
        "seed": 9,
        "description": "one queue",
        "rules": [{"service": "sqs", "resource": res.queue, "error": {"code": "OverLimit"}}],
    }
    env = {
        **os.environ,
        "STP_LOCAL_PORT": str(local_stack.local_port),
        "STP_STATE_DIR": local_stack.state_dir,
    }
    cli = [sys.executable, "-m", "deploy.local"]
    try:
        subprocess.run(
            [*cli, "faults", "set", json.dumps(spec)],
            env=env,
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
        )
        for _ in range(2):
            with pytest.raises(ClientError, match="OverLimit"):
                c.sqs.send_message(QueueUrl=res.queue_url, MessageBody="m")
        shown = status(local_stack).health or {}
        assert shown["faults"]["description"] == "one queue"
        assert shown["faults"]["rules"][0]["counters"]["errors"] == 2
        out = subprocess.run(
            [*cli, "faults", "show"], env=env, cwd=PROJECT_ROOT, check=True, capture_output=True
        )
        assert json.loads(out.stdout)["rules"][0]["counters"]["seen"] == 2
    finally:
        cleared = subprocess.run(
            [*cli, "faults", "clear"], env=env, cwd=PROJECT_ROOT, check=True, capture_output=True
        )
    assert json.loads(cleared.stdout)["rules"][0]["counters"]["errors"] == 2
    assert get_faults(local_stack) == {"active": False}
    c.sqs.send_message(QueueUrl=res.queue_url, MessageBody="m")


def test_a_bad_plan_is_refused_and_the_old_one_stays(local_stack: Settings, res: SimpleNamespace) -> None:
    good = {"rules": [{"service": "sqs", "resource": res.queue, "latency": 1}]}
    with faults_applied(local_stack, good) as final:
        with pytest.raises(FaultSpecError, match=r"rules\[0\]\.error\.code"):
            set_faults(local_stack, {"rules": [{"service": "s3", "error": {"code": "Nope"}}]})
        request = urllib.request.Request(
            f"{local_stack.resolved_endpoint}/_stp/faults", data=b'{"rules": 1}', method="PUT"
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 400 and json.loads(caught.value.read())["field"] == "rules"
        assert get_faults(local_stack)["rules"][0]["resource"] == res.queue
    assert final["active"] is True and get_faults(local_stack) == {"active": False}


def test_up_starts_a_stack_with_a_plan(tmp_path: Path, free_port: Callable[[], int]) -> None:
    settings = load_settings(local_port=free_port(), state_dir=str(tmp_path / "state"))
    spec = {"seed": 2, "rules": [{"service": "s3", "error": {"code": "SlowDown", "rate": 0.1}}]}
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(spec))
    try:
        started = up(settings, faults=str(plan_file))
        assert (started.health or {})["faults"]["rules"][0]["error"] == {"code": "SlowDown", "rate": 0.1}
        up(settings, faults={"rules": [{"service": "sns", "latency": 5}]})  # running: replaces the plan
        assert get_faults(settings)["rules"][0]["service"] == "sns"
    finally:
        down(settings)


def test_a_killed_worker_is_retried_by_the_mapping(
    c: SimpleNamespace, local_stack: Settings, faults: Callable[..., Any], tmp_path: Path
) -> None:
    role = c.iam.create_role(
        RoleName=unique("fault-role"),
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sleepy.py", SLEEPY_HANDLER)
    function, stream = unique("fault-fn"), unique("fault-ks")
    c.lam.create_function(
        FunctionName=function, Runtime="python3.11", Role=role["Role"]["Arn"], Handler="sleepy.handler",
        Code={"ZipFile": buffer.getvalue()}, Timeout=5, Environment={"Variables": {"OUT_DIR": str(tmp_path)}},
    )  # fmt: skip
    c.kinesis.create_stream(StreamName=stream, ShardCount=1)
    arn = c.kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    faults(
        {
            "rules": [
                {
                    "service": "lambda",
                    "resource": function,
                    "kill": {"rate": 1.0, "delay_ms": [50, 150], "max": 1},
                }
            ]
        }
    )
    mapping = c.lam.create_event_source_mapping(
        FunctionName=function, EventSourceArn=arn, StartingPosition="TRIM_HORIZON", BatchSize=10,
        MaximumBatchingWindowInSeconds=0,
    )["UUID"]  # fmt: skip
    try:
        c.kinesis.put_records(StreamName=stream, Records=[{"Data": b"k", "PartitionKey": "p"}] * 3)
        calls_file = tmp_path / "calls.jsonl"
        deadline = time.monotonic() + 30
        calls: list[dict[str, Any]] = []
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            calls = (
                [json.loads(line) for line in calls_file.read_text().splitlines()]
                if calls_file.exists()
                else []
            )
        assert len(calls) >= 2, f"expected the killed batch to be retried; calls: {calls}"
        assert calls[0]["n"] == calls[1]["n"] == 3 and calls[0]["pid"] != calls[1]["pid"]
        rule = get_faults(local_stack)["rules"][0]["counters"]
        assert (rule["kills"], rule["seen"] >= 2) == (1, True)
        runtime = (status(local_stack).health or {})["components"]["lambda"]["workers"]
        assert runtime["crashes"] >= 1
    finally:
        c.lam.delete_event_source_mapping(UUID=mapping)
        c.kinesis.delete_stream(StreamName=stream)
        c.lam.delete_function(FunctionName=function)
        c.iam.delete_role(RoleName=role["Role"]["RoleName"])


def test_requests_of_the_stack_itself_are_exempt_by_default(
    c: SimpleNamespace, res: SimpleNamespace, faults: Callable[..., Any]
) -> None:
    faults({"rules": [{"service": "sqs", "resource": res.queue, "error": {"code": "RequestThrottled"}}]})
    internal = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "sqs", endpoint_url=c.sqs.meta.endpoint_url, region_name="us-east-1",
        config=Config(user_agent_extra="stp-local-stack", retries={"total_max_attempts": 1}),
    )  # fmt: skip
    internal.send_message(QueueUrl=res.queue_url, MessageBody="from the stack")
    with pytest.raises(ClientError, match="RequestThrottled"):
        c.sqs.send_message(QueueUrl=res.queue_url, MessageBody="from a user")
