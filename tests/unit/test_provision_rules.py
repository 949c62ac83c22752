"""Provisioning meets AWS's answers that moto never gives: names held elsewhere, busy names, KMS."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploy import provision as prov
from helpers.core.errors import ConfigError
from helpers.pipeline import resources
from helpers.pipeline.config import load_settings

S = load_settings(environ={}, target="aws", account_id="123456789012", region="eu-west-1")


def stubbed(service: str, monkeypatch: pytest.MonkeyPatch) -> Stubber:
    client = boto3.client(service, region_name=S.region, aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    monkeypatch.setattr(prov.aws, "client", lambda name, settings=None, **_: client)
    stub.activate()
    return stub


def step(field: str, found: dict[str, Any] | None = None) -> prov.Step:
    res = resources.by_field(field)
    arns = prov.Arns.for_account(S, "123456789012")
    return prov.Step(S, arns, res, res.name(S), found, prov.Report())


def test_a_bucket_name_another_account_holds_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = stubbed("s3", monkeypatch)
    stub.add_client_error("get_bucket_location", "AccessDenied", http_status_code=403)
    with pytest.raises(ConfigError) as info:
        prov._find(resources.by_field("raw_bucket"), S, "123456789012")
    assert info.value.field == "raw_bucket"
    assert "another AWS account" in info.value.problem and "STP_RAW_BUCKET" in info.value.fix


def test_a_taken_name_at_creation_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = stubbed("s3", monkeypatch)
    stub.add_client_error("create_bucket", "BucketAlreadyExists", http_status_code=409)
    with pytest.raises(ConfigError) as info:
        prov._create_bucket(step("results_bucket"))
    assert info.value.field == "results_bucket" and "STP_RESULTS_BUCKET" in info.value.fix


def test_a_bucket_name_still_being_deleted_is_retried(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(prov.time, "sleep", lambda seconds: None)
    calls: list[int] = []

    def create() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise prov.ClientError({"Error": {"Code": "OperationAborted", "Message": "busy"}}, "CreateBucket")
        return "made"

    with caplog.at_level("WARNING", logger="deploy.provision"):
        assert prov.retry_while(create, (prov.BUCKET_BUSY,), "bucket b: still deleting", S) == "made"
    assert len(calls) == 3
    assert [m for m in caplog.messages if "still deleting" in m] != []


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def create() -> str:
        calls.append(1)
        raise prov.ClientError({"Error": {"Code": "InvalidBucketName", "Message": "no"}}, "CreateBucket")

    with pytest.raises(prov.ClientError):
        prov.retry_while(create, (prov.BUCKET_BUSY,), "bucket b", S)
    assert calls == [1]


def test_a_stream_that_cannot_be_encrypted_stops_provisioning(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = stubbed("kinesis", monkeypatch)
    summary = {
        "StreamName": S.stream_name, "StreamARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/x",
        "StreamStatus": "ACTIVE", "RetentionPeriodHours": S.stream_retention_hours,
        "StreamCreationTimestamp": "2026-12-01T00:00:00Z", "EnhancedMonitoring": [],
        "OpenShardCount": 1, "EncryptionType": "NONE",
    }  # fmt: skip
    stub.add_response("describe_stream_summary", {"StreamDescriptionSummary": summary})
    stub.add_client_error("start_stream_encryption", "AccessDeniedException", http_status_code=400)
    with pytest.raises(prov.ProvisionError, match="could not be encrypted"):
        prov._create_stream(step("stream_name", found={"StreamDescriptionSummary": summary}))
