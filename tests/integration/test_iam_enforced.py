"""IAM enforced on the local stack: the runner's and each function's policy decide, as on AWS.

One stack of this module's own, with enforcement on and the default resource names (the runner
policy names them). Provisioning and deployment run as the runner (so 01 and 02 pass through
its policy); then each test takes one action out of one policy and sees the step that needs it
fail with AccessDenied, and puts it back.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deploy.iam import POLICY_NAME, Arns, processor_policy, runner_policy, trend_policy
from helpers.core.errors import ProducerError
from helpers.core.indicators import crossovers
from helpers.notebook import alerts, history
from helpers.notebook.sources import replay, synthetic
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

WAIT_SECONDS = 120.0
ACCOUNT = "123456789012"
EMPTY_ZIP = b"PK\x05\x06" + bytes(18)


def _wait(check: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    return wait_until(check, what, timeout)


def _without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    """``policy`` with ``action`` taken out of every statement (statements left empty dropped)."""
    doc = copy.deepcopy(policy)
    for statement in doc["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if a != action]
    doc["Statement"] = [st for st in doc["Statement"] if st["Action"]]
    return doc


@contextlib.contextmanager
def _role_without(settings: Settings, role: str, policy: dict[str, Any], action: str) -> Iterator[None]:
    """``role``'s inline policy without ``action`` inside the block, the whole ``policy`` again after."""
    iam = aws.client("iam", settings)
    reduced = json.dumps(_without(policy, action))
    iam.put_role_policy(RoleName=role, PolicyName=POLICY_NAME, PolicyDocument=reduced)
    try:
        yield
    finally:
        iam.put_role_policy(RoleName=role, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))


def _iam_admin(settings: Settings, document: dict[str, Any] | None) -> dict[str, Any]:
    """Replace the runner's policy through the stack's admin path (None: the shipped one)."""
    request = urllib.request.Request(
        f"{settings.resolved_endpoint}/_stp/iam",
        data=json.dumps({"runner_policy": document}).encode(),
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


def _log_lines(settings: Settings, function: str) -> list[str]:
    logs = aws.client("logs", settings)
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=f"/aws/lambda/{function}")
    return [e["message"] for page in pages for e in page.get("events", [])]


@pytest.fixture(scope="module")
def enforced(tmp_path_factory: pytest.TempPathFactory, free_port: Callable[[], int]) -> Iterator[Settings]:
    """A stack enforcing IAM, with the pipeline provisioned and deployed by the runner."""
    from deploy.functions import deploy_functions
    from deploy.local import down, status, up
    from deploy.provision import provision

    settings = load_settings(
        environ={}, local_port=free_port(), state_dir=str(tmp_path_factory.mktemp("iam"))
    )
    up(settings, owner_pid=os.getpid(), iam=True)
    try:
        assert (status(settings).health or {})["iam"]["enabled"] is True
        provision(settings)
        deploy_functions(settings, build_dir=tmp_path_factory.mktemp("build"))
        yield settings
    finally:
        down(settings)


@pytest.fixture
def arns(enforced: Settings) -> Arns:
    return Arns.for_account(enforced, ACCOUNT)


def _health(settings: Settings) -> dict[str, Any]:
    from deploy.local import status

    return dict((status(settings).health or {})["iam"])


# --------------------------------------------------------------------------- the runner


def test_the_runner_signs_with_its_own_key_and_only_it_is_accepted(enforced: Settings) -> None:
    keys = aws.local_credentials(enforced)
    path = Path(enforced.state_dir) / aws.RUNNER_CREDENTIALS_FILE
    assert keys["aws_access_key_id"].startswith("AKIA") and keys != aws.LOCAL_CREDENTIALS
    assert path.stat().st_mode & 0o777 == 0o600
    identity = aws.client("sts", enforced).get_caller_identity()
    assert identity["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/stp-runner"

    def kinesis(**keys: str) -> Any:
        return boto3.session.Session(region_name=enforced.region, **keys).client(
            "kinesis", endpoint_url=enforced.resolved_endpoint
        )

    with pytest.raises(ClientError) as dummy:
        kinesis(**aws.LOCAL_CREDENTIALS).describe_stream_summary(StreamName=enforced.stream_name)
    assert aws.error_code(dummy.value) == "UnrecognizedClientException"
    wrong = {**keys, "aws_secret_access_key": "not-the-secret"}
    with pytest.raises(ClientError) as forged:
        kinesis(**wrong).describe_stream_summary(StreamName=enforced.stream_name)
    assert aws.error_code(forged.value) == "InvalidSignatureException"
    assert kinesis(**keys).describe_stream_summary(StreamName=enforced.stream_name)[
        "StreamDescriptionSummary"
    ]


@pytest.mark.parametrize(
    ("service", "call", "code", "action"),
    [
        ("dynamodb", lambda c: c.list_tables(), "AccessDeniedException", "dynamodb:ListTables"),
        ("kinesis", lambda c: c.describe_stream_summary(StreamName="someone-elses"), "AccessDeniedException",
         "kinesis:DescribeStreamSummary"),
        ("s3", lambda c: c.create_bucket(Bucket="someone-elses-bucket"), "AccessDenied", None),
        ("sqs", lambda c: c.create_queue(QueueName="someone-elses"), "AccessDenied", "sqs:CreateQueue"),
        ("sns", lambda c: c.create_topic(Name="someone-elses"), "AuthorizationError", "sns:CreateTopic"),
        ("iam", lambda c: c.create_user(UserName="another"), "AccessDenied", "iam:CreateUser"),
        ("lambda", lambda c: c.list_functions(), "AccessDeniedException", "lambda:ListFunctions"),
        ("glue", lambda c: c.get_databases(), "AccessDeniedException", "glue:GetDatabases"),
        ("logs", lambda c: c.describe_log_groups(), "AccessDeniedException", "logs:DescribeLogGroups"),
    ],
)  # fmt: skip
def test_a_call_outside_the_runner_policy_is_refused(
    enforced: Settings, service: str, call: Callable[[Any], Any], code: str, action: str | None
) -> None:
    with pytest.raises(ClientError) as denied:
        call(aws.client(service, enforced))
    assert aws.error_code(denied.value) == code
    message = denied.value.response["Error"].get("Message", "")
    if action is not None:
        assert f"user/stp-runner is not authorized to perform: {action}" in message, message


def test_passing_a_role_outside_the_runner_policy_is_refused(enforced: Settings) -> None:
    lam = aws.client("lambda", enforced)
    with pytest.raises(ClientError) as denied:
        lam.create_function(
            FunctionName=enforced.processor_function + "-x", Runtime="python3.13", Handler="x.handler",
            Role=f"arn:aws:iam::{ACCOUNT}:role/someone-elses-role", Code={"ZipFile": EMPTY_ZIP},
        )  # fmt: skip
    assert aws.error_code(denied.value) == "AccessDeniedException"


def test_a_runner_policy_without_put_records_stops_the_producer(enforced: Settings, arns: Arns) -> None:
    from helpers.notebook.producer import produce

    _iam_admin(enforced, _without(runner_policy(arns), "kinesis:PutRecords"))
    try:
        with pytest.raises(ProducerError) as denied:
            produce(synthetic(["IAMR"], 5), enforced)
        assert aws.error_code(denied.value.__cause__) == "AccessDeniedException"  # type: ignore[arg-type]
        assert "user/stp-runner is not authorized to perform: kinesis:PutRecords" in str(denied.value)
    finally:
        _iam_admin(enforced, None)
    assert produce(synthetic(["IAMR"], 5), enforced).failed == 0


# --------------------------------------------------------------------------- the functions' roles


def test_the_pipeline_runs_on_its_roles_credentials(enforced: Settings) -> None:
    from helpers.notebook.producer import produce

    bars = 200
    denied_before = _health(enforced)["denied"]
    assert produce(replay("aapl-1m", limit=bars), enforced).failed == 0
    processed = _wait(
        lambda: (b := history.processed_bars(enforced, "AAPL")) and len(b) == bars and b, "the processor"
    )
    expected = crossovers(processed, "AAPL")
    assert expected
    received = alerts.wait_for_alerts(enforced, len(expected), timeout=WAIT_SECONDS)
    assert alerts.compare(received, expected)["ok"]
    health = _health(enforced)
    assert health["denied"] == denied_before, health["recent_denials"]


def test_a_processor_role_without_batch_write_fails_with_access_denied(
    enforced: Settings, arns: Arns
) -> None:
    from helpers.notebook.producer import produce

    role = enforced.processor_role
    with _role_without(enforced, role, processor_policy(arns), "dynamodb:BatchWriteItem"):
        assert produce(synthetic(["IAMP"], 30), enforced).failed == 0
        denial = f"assumed-role/{role}/{enforced.processor_function} is not authorized to perform: "
        denial += "dynamodb:BatchWriteItem"
        _wait(
            lambda: any(denial in line for line in _log_lines(enforced, enforced.processor_function)),
            "the processor's AccessDenied in its log",
        )
        assert history.processed_items(enforced, "IAMP") == []
        assert any(d["action"] == "dynamodb:BatchWriteItem" for d in _health(enforced)["recent_denials"])


def test_a_trend_role_without_publish_fails_with_access_denied(enforced: Settings, arns: Arns) -> None:
    from helpers.notebook.producer import produce

    role = enforced.trend_role
    with _role_without(enforced, role, trend_policy(arns), "sns:Publish"):
        quotes = list(synthetic(["IAMT"], 300, seed=11))
        assert produce(quotes, enforced).failed == 0
        processed = _wait(
            lambda: (b := history.processed_bars(enforced, "IAMT")) and len(b) == len(quotes) and b,
            "the processor",
        )
        assert crossovers(processed, "IAMT"), "the seed gives no crossover: pick another"
        denial = f"assumed-role/{role}/{enforced.trend_function} is not authorized to perform: sns:Publish"
        _wait(
            lambda: any(denial in line for line in _log_lines(enforced, enforced.trend_function)),
            "the trend function's AccessDenied in its log",
        )
        assert [a for a in alerts.receive_alerts(enforced, wait_seconds=1) if a.get("symbol") == "IAMT"] == []


def _shard_errors(settings: Settings, function: str) -> list[str]:
    from deploy.local import status

    mappings = (status(settings).health or {})["components"]["lambda"]["mappings"]
    return [
        str(shard.get("last_error"))
        for mapping in mappings.values()
        if mapping["function_arn"].endswith(f":function:{function}")
        for shard in mapping["shards"].values()
    ]


def _every_shard_says(problem: str, errors: list[str]) -> bool:
    return bool(errors) and all(e.startswith(problem) for e in errors)


def test_a_processor_role_that_may_not_read_the_stream_gets_no_records(
    enforced: Settings, arns: Arns
) -> None:
    """Lambda polls the stream with the function's role: without kinesis:GetRecords nothing arrives,
    the mapping says why, and the records come through once the permission is back."""
    from helpers.notebook.producer import produce

    role = enforced.processor_role
    with _role_without(enforced, role, processor_policy(arns), "kinesis:GetRecords"):
        problem = (
            "PROBLEM: The provided execution role does not have permissions to call GetRecords on Kinesis"
        )
        _wait(
            lambda: _every_shard_says(problem, _shard_errors(enforced, enforced.processor_function)),
            "the mapping's problem on every shard (each shard's poller checks the role once a second)",
        )
        assert produce(synthetic(["IAMK"], 10), enforced).failed == 0
        time.sleep(3)  # a few polls
        assert history.processed_items(enforced, "IAMK") == []
    _wait(lambda: len(history.processed_items(enforced, "IAMK")) == 10, "the records after the fix")


def test_a_mapping_for_a_role_that_may_not_read_its_source_is_refused(enforced: Settings, arns: Arns) -> None:
    lam = aws.client("lambda", enforced)
    stream = arns.of("stream_name")
    with _role_without(enforced, enforced.processor_role, processor_policy(arns), "kinesis:GetShardIterator"):
        with pytest.raises(ClientError) as refused:
            lam.create_event_source_mapping(
                FunctionName=enforced.processor_function, EventSourceArn=stream, StartingPosition="LATEST"
            )
        assert aws.error_code(refused.value) == "InvalidParameterValueException"
        assert "does not have permissions to call GetShardIterator on Kinesis" in str(refused.value)


def test_a_trend_role_that_may_not_read_the_table_stream_gets_no_records(
    enforced: Settings, arns: Arns
) -> None:
    role = enforced.trend_role
    with _role_without(enforced, role, trend_policy(arns), "dynamodb:GetRecords"):
        problem = (
            "PROBLEM: The provided execution role does not have permissions to call GetRecords on DynamoDB"
        )
        _wait(
            lambda: _every_shard_says(problem, _shard_errors(enforced, enforced.trend_function)),
            "the mapping's problem on every shard",
        )
    _wait(
        lambda: not any(e.startswith(problem) for e in _shard_errors(enforced, enforced.trend_function)),
        "the mapping to read again",
    )
