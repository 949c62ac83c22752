"""Provisioning against the local stack: idempotent, secure by default, fully reversible."""

from __future__ import annotations

import dataclasses
import json

import pytest

from deploy import iam
from deploy.provision import CREATORS, DELETERS, provision, teardown, tls_only_policy
from helpers.notebook import doctor
from helpers.pipeline import aws, resources
from helpers.pipeline.resources import LOG_RETENTION_DAYS

pytestmark = pytest.mark.integration


def _listed(settings, listing: resources.Listing, service: str, **kwargs) -> set[str]:
    client = aws.client(service, settings)
    if listing.paginated:
        pages = client.get_paginator(listing.operation).paginate(**kwargs)
    else:
        pages = [getattr(client, listing.operation)(**kwargs)]
    items = [item for page in pages for item in page.get(listing.key, [])]
    names = [item[listing.name_key] if listing.name_key else item for item in items]
    if listing.last_segment:
        names = [name.rsplit(listing.last_segment, 1)[-1] for name in names]
    return set(names)


def _inventory(settings) -> dict[str, set[str]]:
    """Everything of the registry's types that exists in the stack (not only what we expect)."""
    found: dict[str, set[str]] = {}
    for res in resources.RESOURCES:
        if res.kind == "glue table":  # listed per database
            tables = {
                f"{db}.{t}"
                for db in _listed(settings, resources.by_field("glue_database").listing, "glue")
                for t in _listed(settings, res.listing, "glue", DatabaseName=db)
            }
            found[res.kind] = tables
        else:
            found[res.kind] = _listed(settings, res.listing, res.service)
    return found


def _ours(settings) -> list[str]:
    """The registry's resources, with the settings' names, that exist."""
    account = aws.account_id(settings)
    return [r.field for r in resources.RESOURCES if resources.find(r, settings, account) is not None]


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
        glue_table="prov_quotes",
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
    for res in resources.RESOURCES:
        expected = f"{s.glue_database}.{s.glue_table}" if res.kind == "glue table" else res.name(s)
        assert expected in during[res.kind], res.field
    assert _ours(s) == [r.field for r in resources.RESOURCES]

    # a non-empty bucket is emptied and removed
    aws.client("s3", s).put_object(Bucket=s.raw_bucket, Key="raw/symbol=X/year=2026/a.ndjson", Body=b"{}\n")
    removed = teardown(s)
    assert removed.count("deleted") == len([r for r in removed.results if r.action != "absent"])
    assert _ours(s) == []
    assert _inventory(s) == before
    assert teardown(s).count("deleted") == 0


def test_every_registry_kind_has_create_and_delete_functions() -> None:
    kinds = {r.kind for r in resources.RESOURCES}
    assert kinds <= set(CREATORS) and kinds <= set(DELETERS)
    assert len({r.field for r in resources.RESOURCES}) == len(resources.RESOURCES)


def test_iam_arns_come_from_the_registry() -> None:
    from helpers.pipeline.config import load_settings

    s = load_settings(environ={}, region="eu-west-1")
    arns = iam.Arns.for_account(s, "123456789012")
    assert arns.of("stream_name") == "arn:aws:kinesis:eu-west-1:123456789012:stream/stock-trend-quotes"
    assert arns.of("raw_bucket") == f"arn:aws:s3:::{s.raw_bucket}"
    assert arns.of("processor_role") == f"arn:aws:iam::123456789012:role/{s.processor_role}"
    assert arns.of("glue_table") == "arn:aws:glue:eu-west-1:123456789012:table/stock_trend/raw_quotes"
    assert arns.of("topic_name") == "arn:aws:sns:eu-west-1:123456789012:stock-trend-alerts"
    china = iam.Arns.for_account(s, "1", partition="aws-cn")
    assert china.of("alert_queue_name") == f"arn:aws-cn:sqs:eu-west-1:1:{s.alert_queue_name}"
    assert (resources.partition("cn-north-1"), resources.partition("us-gov-west-1")) == (
        "aws-cn",
        "aws-us-gov",
    )


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

        logs = aws.client("logs", s)  # the functions' logs expire (CloudWatch's default keeps them forever)
        groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
        retention = {g["logGroupName"]: g.get("retentionInDays") for g in groups}
        for function in (s.processor_function, s.trend_function):
            assert retention[f"/aws/lambda/{function}"] == LOG_RETENTION_DAYS == 14
    finally:
        teardown(s)
    groups = aws.client("logs", s).describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
    assert not {g["logGroupName"] for g in groups} & {
        f"/aws/lambda/{s.processor_function}",
        f"/aws/lambda/{s.trend_function}",
    }


def test_policies_name_only_this_pipelines_resources() -> None:
    from helpers.pipeline.config import load_settings

    s = load_settings(environ={})
    docs = iam.role_policies(iam.Arns.for_account(s, "123456789012"))
    text = json.dumps(docs)
    for statement in (st for doc in docs.values() for st in doc["Statement"]):
        assert all(":" in a and not a.endswith("*") for a in statement["Action"])
    assert s.stream_name in text and s.table_name in text and s.raw_bucket in text


TEARDOWN_OBJECTS = 12_200  # the daily dataset's raw archive before its month layout: 12,154 bars


def test_teardown_empties_a_bucket_of_any_size(own_names) -> None:
    # More objects than one listing page holds (1,000): paging on while deleting left most behind.
    from concurrent.futures import ThreadPoolExecutor

    s = dataclasses.replace(own_names, raw_bucket="prov-many-objects", results_bucket="prov-many-results")
    provision(s)
    s3 = aws.client("s3", s)
    keys = [f"raw/symbol=S{i % 7}/year=2026/{i:05d}.ndjson" for i in range(TEARDOWN_OBJECTS)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=s.raw_bucket, Key=key, Body=b"{}\n"), keys))
    assert s3.list_objects_v2(Bucket=s.raw_bucket)["KeyCount"] == 1000  # a page: there are more
    removed = teardown(s)
    assert {r.name: r.action for r in removed.results if r.kind == "s3 bucket"} == {
        s.raw_bucket: "deleted",
        s.results_bucket: "deleted",
    }
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert s.raw_bucket not in names
