"""The local stack keeps its state across ``down``/``up`` (see :mod:`deploy.local.persist`).

Each test runs a stack of its own (own port, own state folder), so stopping it touches nothing else.
The SIGKILL-mid-stream case is the chaos matrix's ``stack_crash`` (tests/chaos).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.functions import deploy_functions
from deploy.local import down, persist, status, up
from deploy.provision import provision
from helpers.notebook import verify
from helpers.notebook.producer import produce
from helpers.notebook.sources import synthetic
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings
from tests.conftest import free_loopback_port

pytestmark = pytest.mark.integration

QUOTES = 400  # two symbols: enough bars for SMA20 crossovers on each
SEED = 7


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Settings]:
    s = load_settings(local_port=free_loopback_port(), state_dir=str(tmp_path / "state"))
    up(s)
    try:
        yield s
    finally:
        down(s)


def _stream(s: Settings) -> dict[str, Any]:
    kinesis = aws.client("kinesis", s)
    shards: dict[str, list[str]] = {}
    for shard in kinesis.list_shards(StreamName=s.stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=s.stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        shards[shard["ShardId"]] = [r["SequenceNumber"] for r in page["Records"]]
    return shards


def _stream_records(s: Settings) -> Counter[str]:
    """Records of the table's DynamoDB stream (what the trend mapping reads), by event name."""
    streams = aws.client("dynamodbstreams", s)
    arn = aws.client("dynamodb", s).describe_table(TableName=s.table_name)["Table"]["LatestStreamArn"]
    total: Counter[str] = Counter()
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        total.update(
            r["eventName"] for r in streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
        )
    return total


def inventory(s: Settings) -> dict[str, Any]:
    """Every resource kind the pipeline uses, with what it holds, read through the AWS APIs."""
    s3, sqs, sns = aws.client("s3", s), aws.client("sqs", s), aws.client("sns", s)
    lam, glue, athena = aws.client("lambda", s), aws.client("glue", s), aws.client("athena", s)
    queues = {}
    for name in (s.failure_queue_name, s.alert_queue_name):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        queues[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]
    topic = sns.create_topic(Name=s.topic_name)["TopicArn"]  # idempotent: the existing topic's ARN
    functions = {f: lam.get_function(FunctionName=f)["Configuration"]["CodeSha256"] for f in
                 (s.processor_function, s.trend_function)}  # fmt: skip
    mappings = sorted(
        (m["UUID"], m["State"], m["EventSourceArn"])
        for m in lam.list_event_source_mappings()["EventSourceMappings"]
    )
    return {
        "stream": _stream(s),
        "items": verify.dynamodb_count(s),
        "table_stream_records": _stream_records(s),
        "objects": sorted(
            (o["Key"], o["ETag"])
            for bucket in (s.raw_bucket, s.results_bucket)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
        ),
        "encryption": s3.get_bucket_encryption(Bucket=s.raw_bucket)["ServerSideEncryptionConfiguration"],
        "queues": queues,
        "subscriptions": sorted(
            x["Endpoint"] for x in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        ),
        "functions": functions,
        "mappings": mappings,
        "glue_table": glue.get_table(DatabaseName=s.glue_database, Name=s.glue_table)["Table"][
            "StorageDescriptor"
        ],
        "workgroup": athena.get_work_group(WorkGroup=s.athena_workgroup)["WorkGroup"]["Configuration"],
        "queries": sorted(athena.list_query_executions(WorkGroup=s.athena_workgroup)["QueryExecutionIds"]),
        "roles": sorted(
            r["RoleName"]
            for r in aws.client("iam", s).list_roles()["Roles"]
            if r["RoleName"] in (s.processor_role, s.trend_role)
        ),
        "log_groups": sorted(
            g["logGroupName"] for g in aws.client("logs", s).describe_log_groups()["logGroups"]
        ),
    }


def _athena_query(s: Settings) -> str:
    athena = aws.client("athena", s)
    qid = athena.start_query_execution(
        QueryString=f"SELECT count(*) FROM {s.glue_table}",
        QueryExecutionContext={"Database": s.glue_database},
        WorkGroup=s.athena_workgroup,
    )["QueryExecutionId"]
    aws.wait_until(
        lambda: (
            athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]["State"]
            in ("SUCCEEDED", "FAILED")
        ),
        "the Athena query",
        60,
    )
    return str(qid)


def _settled(s: Settings, expected: int) -> dict[str, Any]:
    result = verify.wait_for_processing(s, expected, timeout=120)
    assert result["settled"], result
    time.sleep(3)  # the trend mapping follows the table's stream
    return verify.store_counts(s)


def test_down_then_up_keeps_every_resource_and_the_pipeline_carries_on(
    own_stack: Settings, tmp_path: Path
) -> None:
    """GIVEN a pipeline with data in every store WHEN the stack is stopped and started again
    THEN every resource holds what it held, and records sent afterwards are processed once."""
    s = own_stack
    quotes = list(synthetic(2, QUOTES, seed=SEED))
    provision(s)
    deploy_functions(s, build_dir=tmp_path / "build")
    produce(quotes[: QUOTES // 2], s)
    _settled(s, QUOTES // 2)
    query = _athena_query(s)
    before = inventory(s)
    assert before["items"] == QUOTES // 2 and query in before["queries"]

    assert down(s)
    saved = persist.saved_state(s.state_dir)
    assert saved is not None and saved["bytes"] > 0, saved
    assert {"kinesis", "dynamodb", "s3", "sqs", "sns", "lambda", "glue", "iam", "logs", "athena"} <= set(
        saved["services"]
    ), saved
    up(s)
    after = inventory(s)
    assert after == before

    produce(quotes[QUOTES // 2 :], s)
    counts = _settled(s, QUOTES)
    assert counts["dynamodb_items"] == QUOTES
    assert counts["records_accepted"] == counts["raw_records"] == QUOTES  # each line once
    assert _stream_records(s)["INSERT"] == QUOTES  # the table's stream kept its records: one per item
    restored = status(s).health["persistence"]["restored"]  # type: ignore[index]
    assert restored["snapshot_generation"] is not None and restored["journal_records_replayed"] == 0


def test_reset_starts_empty(own_stack: Settings) -> None:
    """GIVEN a stack with a stream WHEN it is stopped, reset and started THEN the stream is gone."""
    s = own_stack
    aws.client("kinesis", s).create_stream(StreamName="reset-me", ShardCount=1)
    down(s)
    assert persist.reset(s.state_dir)
    assert persist.saved_state(s.state_dir) is None
    up(s)
    names = aws.client("kinesis", s).list_streams()["StreamNames"]
    assert "reset-me" not in names


def _snapshot_now(s: Settings) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{s.local_port}/_stp/snapshot", method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


def test_records_acknowledged_after_the_last_snapshot_survive_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN records put after the last snapshot WHEN the stack is SIGKILLed and started again
    THEN the journal puts every acknowledged record back, with the same sequence numbers."""
    monkeypatch.setenv("STP_LOCAL_SNAPSHOT_SECONDS", "600")  # no snapshot but the one taken here
    s = load_settings(
        local_port=free_loopback_port(), state_dir=str(tmp_path / "state"), stream_name="journaled"
    )
    up(s)
    try:
        kinesis = aws.client("kinesis", s)
        kinesis.create_stream(StreamName=s.stream_name, ShardCount=2)
        assert _snapshot_now(s)["written"]
        answers = [
            kinesis.put_records(
                StreamName=s.stream_name,
                Records=[{"Data": f"{i}-{j}".encode(), "PartitionKey": f"k{j}"} for j in range(50)],
            )
            for i in range(5)
        ]
        sent = {r["ShardId"]: [] for a in answers for r in a["Records"]}
        for a in answers:
            for r in a["Records"]:
                sent[r["ShardId"]].append(r["SequenceNumber"])
        pid = status(s).pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        aws.wait_until(lambda: not status(s).running, "the stack's death", 10)
        up(s)
        assert _stream(s) == sent
        restored = status(s).health["persistence"]["restored"]  # type: ignore[index]
        assert restored["journal_records_replayed"] == 250
    finally:
        down(s)
