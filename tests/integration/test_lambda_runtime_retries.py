"""The local Lambda runtime's failure handling on a Kinesis mapping, through the AWS APIs.

Partial-batch responses, timeouts, exhausted retries sent to the on-failure queue, and bisecting a
batch to isolate a poison record.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from lambda_runtime_support import (
    calls,
    decoded,
    delivered,
    deploy,
    failure_messages,
    invocations,
    map_stream,
    put,
    queue,
    settled,
    stream,
    wait_until,
)

from helpers.pipeline.config import Settings

pytestmark = pytest.mark.integration


def poison_mapping(
    c: SimpleNamespace, role_arn: str, code: bytes, out: Path, *, retries: int, bisect: bool
) -> tuple[str, tuple[str, str], str]:
    """The ``poison`` handler mapped to a fresh stream with an on-failure queue.

    Returns the function name, the stream's (name, ARN) and the queue's URL.
    """
    function = deploy(c, role_arn, code, "poison", {"OUT_DIR": str(out)})
    stream_name, stream_arn = stream(c)
    url, queue_arn = queue(c)
    map_stream(
        c,
        function,
        stream_arn,
        MaximumRetryAttempts=retries,
        BisectBatchOnFunctionError=bisect,
        MaximumBatchingWindowInSeconds=1,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    return function, (stream_name, stream_arn), url


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
    function, (stream_name, stream_arn), url = poison_mapping(
        c, role_arn, fixture_zip, tmp_path, retries=1, bisect=False
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
    _, (stream_name, _), url = poison_mapping(c, role_arn, fixture_zip, tmp_path, retries=0, bisect=True)
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
