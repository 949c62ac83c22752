"""The client factory: one region, one endpoint, botocore's standard retries."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from helpers.core.errors import DeployError
from helpers.pipeline import aws
from helpers.pipeline.config import load_settings


def test_local_clients_are_bound_to_the_stack_endpoint_region_and_standard_retries() -> None:
    s = load_settings(environ={}, local_port=4777, region="eu-west-1")
    kinesis = aws.client("kinesis", s)
    assert kinesis.meta.endpoint_url == "http://127.0.0.1:4777"
    assert kinesis.meta.region_name == "eu-west-1"
    assert kinesis.meta.config.retries["mode"] == "standard"
    assert kinesis.meta.config.retries["total_max_attempts"] == aws.RETRY_CONFIG["max_attempts"] + 1
    assert aws.client("kinesis", s) is kinesis  # cached per settings and service
    assert aws.client("kinesis", s, cached=False) is not kinesis


def test_aws_clients_use_aws_endpoints() -> None:
    s = load_settings(environ={}, target="aws", region="ap-southeast-2", account_id="123456789012")
    assert aws.client("dynamodb", s).meta.endpoint_url == "https://dynamodb.ap-southeast-2.amazonaws.com"


def test_error_code() -> None:
    err = ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "x"}}, "DescribeStream")
    assert aws.error_code(err) == "ResourceNotFoundException"
    assert aws.error_code(ValueError("x")) == ""


def test_wait_until_names_what_did_not_settle() -> None:
    states = iter([False, False, True])
    aws.wait_until(lambda: next(states), "thing", 5, poll=0)
    with pytest.raises(DeployError, match=r"mapping 1 did not become ready within 0 s; retry later"):
        aws.wait_until(lambda: False, "mapping 1", 0, poll=0, error=DeployError, hint="retry later")


def test_a_slow_call_inside_a_function_fails_well_within_its_timeout(monkeypatch) -> None:
    from deploy.function_specs import FUNCTION_SPECS

    budget = aws.function_call_budget_seconds()
    assert budget == 3 * (2 + 5) + 1 + 2
    for spec in FUNCTION_SPECS.values():
        assert 2 * budget < spec.timeout, spec.kind  # room to report the records as failed
    s = load_settings(environ={}, account_id="123456789012")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "stock-trend-processor")
    inside = aws.client("s3", s, cached=False).meta.config
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    outside = aws.client("s3", s, cached=False).meta.config
    assert (inside.read_timeout, inside.connect_timeout, inside.retries["total_max_attempts"]) == (5, 2, 3)
    assert (outside.read_timeout, outside.retries["total_max_attempts"]) == (60, 9)
