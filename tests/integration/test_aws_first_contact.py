"""First contact with AWS, proven on the local stack: names, re-provisioning, teardown, limits."""

from __future__ import annotations

import time

import pytest

from helpers.pipeline.config import Settings, load_settings


def load(**overrides: object) -> Settings:
    return load_settings(overrides, environ={})


def test_aws_bucket_names_follow_the_credentials_account(local_stack: Settings) -> None:
    # An aws target pointed at an endpoint that answers STS (the local stack) names the buckets
    # after the account that endpoint reports, the way real credentials would.
    import boto3

    key = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in key.items():
            mp.setenv(name, value)
        s = load(target="aws", endpoint_url=local_stack.resolved_endpoint)
    account = boto3.client(
        "sts",
        endpoint_url=local_stack.resolved_endpoint,
        region_name="us-east-1",
        **{k.lower(): v for k, v in key.items()},
    ).get_caller_identity()["Account"]
    assert s.account_id == account
    assert s.raw_bucket == f"stock-trend-raw-{account}-us-east-1"


@pytest.fixture(scope="module")
def aws_like_stack(tmp_path_factory: pytest.TempPathFactory):
    """A stack of its own whose SQS keeps deleted queue names for 12 s, dying queues visible 3 s,
    and whose S3 keeps a deleted bucket's name busy for 4 s (so provisioning right after a
    teardown meets both: the buckets are deleted after the queues, and created before them)."""
    from deploy.local import aws_rules, down, up
    from tests.conftest import free_loopback_port

    s = load(local_port=free_loopback_port(), state_dir=str(tmp_path_factory.mktemp("aws-like")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(aws_rules.QUEUE_DELETION_ENV, "12")
        mp.setenv(aws_rules.QUEUE_DYING_ENV, "3")
        mp.setenv(aws_rules.BUCKET_DELETION_ENV, "4")
        stack = up(s)
    rules = (stack.health or {})["aws_rules"]
    windows = ("queue_deletion_seconds", "queue_dying_seconds", "bucket_deletion_seconds", "shard_limits")
    assert tuple(rules[w] for w in windows) == (12, 3, 4, 1)
    try:
        yield s
    finally:
        down(s)


def test_a_deleted_queue_name_behaves_as_on_aws(aws_like_stack: Settings) -> None:
    import time

    from botocore.exceptions import ClientError

    from helpers.pipeline import aws

    sqs = aws.client("sqs", aws_like_stack)
    url = sqs.create_queue(QueueName="dying-queue")["QueueUrl"]
    sqs.delete_queue(QueueUrl=url)
    deleted = time.monotonic()
    assert sqs.get_queue_url(QueueName="dying-queue")["QueueUrl"] == url  # "might succeed" meanwhile
    with pytest.raises(ClientError) as info:
        sqs.create_queue(QueueName="dying-queue")
    assert aws.error_code(info.value) == "AWS.SimpleQueueService.QueueDeletedRecently"
    while time.monotonic() - deleted < 3.2:
        time.sleep(0.2)
    with pytest.raises(ClientError) as gone:
        sqs.get_queue_url(QueueName="dying-queue")
    assert aws.is_missing(gone.value, *aws.QUEUE_MISSING_CODES)
    while time.monotonic() - deleted < 12.2:
        time.sleep(0.2)
    assert sqs.create_queue(QueueName="dying-queue")["QueueUrl"] == url


def test_a_deleted_bucket_name_is_busy_for_a_moment_as_on_aws(aws_like_stack: Settings) -> None:
    from botocore.exceptions import ClientError

    from helpers.pipeline import aws

    s3 = aws.client("s3", aws_like_stack)
    s3.create_bucket(Bucket="busy-bucket")
    s3.delete_bucket(Bucket="busy-bucket")
    deleted = time.monotonic()
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="busy-bucket")
    assert aws.error_code(info.value) == "OperationAborted"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert "conflicting conditional operation" in info.value.response["Error"]["Message"]
    while time.monotonic() - deleted < 4.2:
        time.sleep(0.2)
    s3.create_bucket(Bucket="busy-bucket")  # the name is free again
    s3.delete_bucket(Bucket="busy-bucket")


def test_teardown_then_immediate_provision_succeeds(aws_like_stack: Settings, caplog) -> None:
    import time

    from deploy.provision import provision, teardown

    s = aws_like_stack
    assert provision(s).count("created") >= 14
    started = time.monotonic()
    removed = teardown(s)
    teardown_seconds = time.monotonic() - started
    queues = [r for r in removed.results if r.kind == "sqs queue"]
    assert [r.action for r in queues] == ["deleted", "deleted"]
    assert teardown_seconds >= 3.0  # it waited for the dying queues to stop answering

    with caplog.at_level("WARNING", logger="deploy.provision"):
        again = provision(s)  # within the 4 s and 12 s: OperationAborted, QueueDeletedRecently first
    queue_actions = {r.name: r.action for r in again.results if r.kind == "sqs queue"}
    assert queue_actions == {s.failure_queue_name: "created", s.alert_queue_name: "created"}
    assert any("still deleting a queue of that name" in m for m in caplog.messages)
    assert any("S3 is still deleting a bucket of that name" in m for m in caplog.messages)
    buckets = {r.name: r.action for r in again.results if r.kind == "s3 bucket"}
    assert buckets == {s.raw_bucket: "created", s.results_bucket: "created"}
    assert again.count("exists") == 0
    teardown(s)


def _one_shard_stream(s: Settings, name: str) -> str:
    from helpers.pipeline import aws

    kinesis = aws.client("kinesis", s)
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    return name


def _throttled(s: Settings) -> int:
    from deploy.local import status

    return int((status(s).health or {})["aws_rules"]["answered"]["throttled_records"])


def test_a_shard_refuses_writes_beyond_its_limits(aws_like_stack: Settings) -> None:
    from helpers.pipeline import aws

    s = aws_like_stack
    stream = _one_shard_stream(s, "limits-raw")
    kinesis = aws.client("kinesis", s)
    before = _throttled(s)
    answers = []
    started = time.monotonic()
    for call in range(3):  # 1,500 records at once: a shard takes 1,000 a second
        records = [{"Data": b"x" * 100, "PartitionKey": f"k{call}-{i}"} for i in range(500)]
        answers += kinesis.put_records(StreamName=stream, Records=records)["Records"]
    elapsed = time.monotonic() - started
    refused = [a for a in answers if a.get("ErrorCode")]
    assert 1_500 - len(refused) <= 1_000 + 1_000 * elapsed + 1  # a second's burst, then the refill
    assert {a["ErrorCode"] for a in refused} <= {"ProvisionedThroughputExceededException"}
    assert _throttled(s) - before == len(refused)
    if refused:
        assert "Rate exceeded for shard shardId-000000000000" in refused[0]["ErrorMessage"]
    time.sleep(1.1)  # the record bucket refills; the byte limit on its own:
    big = [{"Data": b"y" * 1_000_000, "PartitionKey": f"b{i}"} for i in range(3)]  # 3 MB at once
    volume = kinesis.put_records(StreamName=stream, Records=big)["Records"]
    assert [bool(a.get("ErrorCode")) for a in volume] == [False, True, True]  # 1 MiB a second


def test_the_producer_at_full_speed_stays_within_the_shard_limits(aws_like_stack: Settings) -> None:
    import dataclasses

    from helpers.core.quotes import Quote
    from helpers.notebook.producer import produce

    s = dataclasses.replace(aws_like_stack, stream_name=_one_shard_stream(aws_like_stack, "limits-producer"))
    quotes = [
        Quote(symbol=f"S{i % 40:02d}", timestamp=f"2026-07-29T{13 + i // 2400:02d}:{i // 40 % 60:02d}:00Z",
              price=1.0, previous_close=1.0, open=1.0, high=1.0, low=1.0, volume=1, source="synthetic")
        for i in range(3_000)
    ]  # fmt: skip
    before = _throttled(s)
    sent = produce(quotes, s, aggregate=1, linger=None)  # SPEED=0: as fast as the shard allows
    assert sent.records == 3_000 and sent.failed == 0 and sent.retried == 0
    assert _throttled(s) == before  # the local stack never had to refuse one
    assert sent.records / sent.seconds <= 1_000  # one shard: within its 1,000 records/s
