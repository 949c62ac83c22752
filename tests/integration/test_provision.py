"""Provisioning against the local stack: idempotent, secure by default, fully reversible."""

from __future__ import annotations

import dataclasses
import json

import pytest

from deploy import iam
from deploy.provision import provision, teardown, tls_only_policy
from helpers.notebook import doctor
from helpers.pipeline import aws

pytestmark = pytest.mark.integration


def _all(settings, service: str, operation: str, key: str) -> list:
    paginator = aws.client(service, settings).get_paginator(operation)
    return [item for page in paginator.paginate() for item in page.get(key, [])]


def _inventory(settings) -> dict[str, set[str]]:
    """Everything that exists in the stack, by service (not only what we expect)."""
    return {
        "streams": set(_all(settings, "kinesis", "list_streams", "StreamNames")),
        "tables": set(_all(settings, "dynamodb", "list_tables", "TableNames")),
        "buckets": {b["Name"] for b in aws.client("s3", settings).list_buckets()["Buckets"]},
        "topics": {t["TopicArn"].rsplit(":", 1)[-1] for t in _all(settings, "sns", "list_topics", "Topics")},
        "queues": {u.rsplit("/", 1)[-1] for u in _all(settings, "sqs", "list_queues", "QueueUrls")},
        "roles": {r["RoleName"] for r in _all(settings, "iam", "list_roles", "Roles")},
        "databases": {d["Name"] for d in _all(settings, "glue", "get_databases", "DatabaseList")},
        "workgroups": {w["Name"] for w in aws.client("athena", settings).list_work_groups()["WorkGroups"]},
    }


@pytest.fixture()
def own_names(local_stack):
    """Settings with resource names no other test uses, so leftovers elsewhere cannot interfere."""
    return dataclasses.replace(
        local_stack,
        stream_name="prov-quotes",
        table_name="prov-processed",
        alerts_table_name="prov-alerts-sent",
        raw_bucket="prov-raw-bucket",
        results_bucket="prov-results-bucket",
        topic_name="prov-alerts",
        alert_queue_name="prov-alerts-inbox",
        failure_queue_name="prov-failures",
        glue_database="prov_db",
        athena_workgroup="prov-workgroup",
        processor_function="prov-processor",
        trend_function="prov-trend",
        processor_role="prov-processor-role",
        trend_role="prov-trend-role",
    )


def test_provision_twice_then_teardown_leaves_nothing(own_names) -> None:
    s = own_names
    before = _inventory(s)
    first = provision(s)
    assert first.count("created") >= 12
    second = provision(s)
    assert second.count("created") == 0
    assert not doctor.failures(doctor.run_checks(s))

    during = _inventory(s)
    assert s.stream_name in during["streams"]
    assert {s.table_name, s.alerts_table_name} <= during["tables"]
    assert {s.raw_bucket, s.results_bucket} <= during["buckets"]
    assert {s.alert_queue_name, s.failure_queue_name} <= during["queues"]

    # a non-empty bucket is emptied and removed
    aws.client("s3", s).put_object(
        Bucket=s.raw_bucket, Key="raw/symbol=X/dt=2026-01-01/a.ndjson", Body=b"{}\n"
    )
    removed = teardown(s)
    assert removed.count("deleted") == len([r for r in removed.results if r.action != "absent"])
    assert _inventory(s) == before
    assert teardown(s).count("deleted") == 0


def test_resources_are_configured_securely(own_names) -> None:
    s = own_names
    provision(s)
    try:
        s3 = aws.client("s3", s)
        for bucket in (s.raw_bucket, s.results_bucket):
            block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
            assert block == {
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            }
            rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
            assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
            # TLS-only policy is applied on AWS only (the local stack is plain HTTP on loopback)
            assert tls_only_policy(bucket)["Statement"][0]["Condition"] == {
                "Bool": {"aws:SecureTransport": "false"}
            }

        table = aws.client("dynamodb", s).describe_table(TableName=s.table_name)["Table"]
        assert [k["AttributeName"] for k in table["KeySchema"]] == ["symbol", "timestamp"]
        assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

        stream = aws.client("kinesis", s).describe_stream_summary(StreamName=s.stream_name)
        assert stream["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
        assert stream["StreamDescriptionSummary"]["RetentionPeriodHours"] == s.stream_retention_hours

        client = aws.client("iam", s)
        for role in (s.processor_role, s.trend_role):
            doc = client.get_role_policy(RoleName=role, PolicyName=iam.POLICY_NAME)["PolicyDocument"]
            doc = json.loads(doc) if isinstance(doc, str) else doc
            actions = [a for st in doc["Statement"] for a in st["Action"]]
            assert actions and not any("*" in a for a in actions)
            resources = [r for st in doc["Statement"] for r in st["Resource"]]
            assert all(r.startswith("arn:aws:") and r != "*" for r in resources)
            trust = client.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
            assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    finally:
        teardown(s)


def test_policies_name_only_this_pipelines_resources() -> None:
    from helpers.pipeline.config import load_settings

    s = load_settings(environ={})
    docs = iam.role_policies(iam.Arns.for_account(s, "123456789012"))
    text = json.dumps(docs)
    for statement in (st for doc in docs.values() for st in doc["Statement"]):
        assert all(":" in a and not a.endswith("*") for a in statement["Action"])
    assert s.stream_name in text and s.table_name in text and s.raw_bucket in text
