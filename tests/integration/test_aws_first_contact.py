"""First contact with AWS, proven on the local stack: names, re-provisioning, teardown, limits."""

from __future__ import annotations

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
