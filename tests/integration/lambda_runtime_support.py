"""Helpers for the Lambda runtime tests (``test_lambda_runtime_*.py``); the fixtures are in ``conftest``.

The fixture zip's handlers append every event they get to ``calls.jsonl`` in the folder named by
``OUT_DIR``; the helpers here deploy it, wire it to streams and queues, and wait for what it saw.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from helpers.pipeline.config import Settings

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
