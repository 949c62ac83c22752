"""Provision and tear down the pipeline's resources, idempotently, on AWS or the local stack.

``provision(settings)`` creates what is missing and brings security settings to the desired
state; a second run creates nothing and raises nothing. ``teardown(settings)`` removes every
resource named in the settings (emptying buckets first) and nothing else.

What exists is declared once, in :data:`helpers.pipeline.resources.RESOURCES`: both walk
that registry (teardown in reverse) and look up each entry's create or delete function by
its ``kind`` in :data:`CREATORS` / :data:`DELETERS`.

With ``alerts_fifo`` the alert topic is an SNS FIFO topic (content-based deduplication on; the
trend Lambda's explicit ``MessageDeduplicationId`` = ``alert_id`` takes precedence) and the
inbox an SQS FIFO queue: the only subscriber type FIFO topics deliver to, so ``alert_email`` is
not subscribed then (a warning says so).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from deploy.iam import POLICY_NAME, Arns, role_policies, tls_only_policy, topic_to_queue_policy, trust_policy
from helpers.pipeline import aws, resources
from helpers.pipeline.config import Settings, load_settings
from helpers.pipeline.resources import Resource

__all__ = [
    "CREATORS",
    "DELETERS",
    "PROCESSED_KEY_SCHEMA",
    "Report",
    "ResourceResult",
    "key_schema",
    "provision",
    "teardown",
    "tls_only_policy",
]

log = logging.getLogger(__name__)

QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
WAIT_SECONDS = 120
MAX_KEYS_PER_DELETE_OBJECTS = 1000  # DeleteObjects limit
TAGS = [{"Key": "project", "Value": "stock-trend"}]


def key_schema(key: Mapping[str, str]) -> dict[str, Any]:
    """DynamoDB attribute definitions and key schema of string keys ``{attribute: HASH|RANGE}``."""
    return {
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in key],
        "KeySchema": [{"AttributeName": a, "KeyType": t} for a, t in key.items()],
    }


# The processed table's keys: one item per symbol and bar time.
PROCESSED_KEY_SCHEMA: dict[str, Any] = key_schema(resources.by_field("table_name").options["key"])


@dataclass(frozen=True)
class ResourceResult:
    kind: str
    name: str
    action: str  # created | exists | deleted | absent
    arn: str | None = None


@dataclass
class Report:
    results: list[ResourceResult] = field(default_factory=list)

    def add(self, kind: str, name: str, action: str, arn: str | None = None) -> None:
        self.results.append(ResourceResult(kind, name, action, arn))
        log.info("%s %s: %s", kind, name, action)

    def count(self, action: str) -> int:
        return sum(1 for r in self.results if r.action == action)

    def rows(self) -> list[dict[str, Any]]:
        return [r.__dict__ for r in self.results]


@dataclass(frozen=True)
class Step:
    """One registry entry being provisioned: its settings, ARNs, name and current state."""

    s: Settings
    arns: Arns
    resource: Resource
    name: str
    found: dict[str, Any] | None  # the probe's answer, None when missing
    report: Report


# --- provisioning --------------------------------------------------------------------------


def provision(settings: Settings | None = None) -> Report:
    """Create every resource of the pipeline that is missing. Safe to run again."""
    s = settings or load_settings()
    report = Report()
    arns = Arns.for_account(s, aws.account_id(s))
    for res in resources.RESOURCES:
        found = resources.find(res, s, arns.account)
        step = Step(s, arns, res, res.name(s), found, report)
        CREATORS[res.kind](step)
        report.add(res.kind, step.name, "exists" if found else "created", arns.of(res.field))
    return report


def _create_stream(step: Step) -> None:
    s, kinesis = step.s, aws.client("kinesis", step.s)
    if step.found is None:
        kinesis.create_stream(StreamName=step.name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
        kinesis.get_waiter("stream_exists").wait(
            StreamName=step.name, WaiterConfig={"Delay": 1, "MaxAttempts": WAIT_SECONDS}
        )
    summary = kinesis.describe_stream_summary(StreamName=step.name)["StreamDescriptionSummary"]
    retention = int(summary.get("RetentionPeriodHours", 24))
    if retention < s.stream_retention_hours:
        kinesis.increase_stream_retention_period(
            StreamName=step.name, RetentionPeriodHours=s.stream_retention_hours
        )
    elif retention > s.stream_retention_hours:
        kinesis.decrease_stream_retention_period(
            StreamName=step.name, RetentionPeriodHours=s.stream_retention_hours
        )
    if summary.get("EncryptionType", "NONE") == "NONE":
        try:
            kinesis.start_stream_encryption(
                StreamName=step.name, EncryptionType="KMS", KeyId="alias/aws/kinesis"
            )
        except ClientError as err:  # pragma: no cover - depends on the account's KMS setup
            log.warning("could not enable encryption on stream %s: %s", step.name, err)


def _create_table(step: Step) -> None:
    if step.found is not None:
        return
    ddb, options = aws.client("dynamodb", step.s), step.resource.options
    spec = key_schema(options["key"])
    if "stream_view" in options:
        spec["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": options["stream_view"]}
    ddb.create_table(
        TableName=step.name,
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": True},
        Tags=TAGS,
        **spec,
    )
    ddb.get_waiter("table_exists").wait(
        TableName=step.name, WaiterConfig={"Delay": 1, "MaxAttempts": WAIT_SECONDS}
    )


def _create_bucket(step: Step) -> None:
    s, name, s3 = step.s, step.name, aws.client("s3", step.s)
    if step.found is None:
        kwargs: dict[str, Any] = {"Bucket": name}
        if s.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
        s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_ownership_controls(
        Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
            ]
        },
    )
    if not s.is_local:
        # The local stack speaks plain HTTP on loopback, where a TLS-only policy would deny
        # every request (moto enforces bucket-policy denies), so it is applied on AWS only.
        s3.put_bucket_policy(Bucket=name, Policy=json.dumps(tls_only_policy(name)))
    expire_days = step.resource.options.get("expire_days")
    if expire_days:
        rule = {"ID": "expire-query-results", "Status": "Enabled", "Filter": {"Prefix": ""}}
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [{**rule, "Expiration": {"Days": expire_days}}]}
        )


def _create_queue(step: Step) -> None:
    """A queue; with ``subscribe_to``, the queue receives that topic's messages (raw delivery)."""
    sqs = aws.client("sqs", step.s)
    if step.found is None:
        attributes = {"MessageRetentionPeriod": str(QUEUE_RETENTION_SECONDS), "SqsManagedSseEnabled": "true"}
        if resources.is_fifo(step.resource, step.s):  # SNS passes each alert's deduplication id on
            attributes.update(FifoQueue="true", ContentBasedDeduplication="false")
        url = sqs.create_queue(QueueName=step.name, Attributes=attributes)["QueueUrl"]
    else:
        url = step.found["QueueUrl"]
    topic_field = step.resource.options.get("subscribe_to")
    if topic_field is None:
        return
    queue_arn, topic_arn = step.arns.of(step.resource.field), step.arns.of(topic_field)
    policy = topic_to_queue_policy(queue_arn, topic_arn)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    sns = aws.client("sns", step.s)
    if queue_arn not in _subscriptions(sns, topic_arn):
        sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
        )
        step.report.add("sns subscription", f"sqs:{step.name}", "created")


def _create_topic(step: Step) -> None:
    sns, email = aws.client("sns", step.s), step.s.alert_email
    topic_arn = step.arns.of(step.resource.field)
    if step.found is None:
        attributes = {}
        if resources.is_fifo(step.resource, step.s):  # de-duplicates by MessageDeduplicationId (alert_id)
            attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "true"}
        topic_arn = sns.create_topic(Name=step.name, Attributes=attributes, Tags=TAGS)["TopicArn"]
    if email and resources.is_fifo(step.resource, step.s):
        log.warning("alert_email %s not subscribed: SNS FIFO topics deliver to SQS FIFO queues only", email)
    elif email and email not in _subscriptions(sns, topic_arn):
        sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=email)
        step.report.add("sns subscription", f"email:{email}", "created (confirm the email)")


def _subscriptions(sns: Any, topic_arn: str) -> dict[str, str]:
    endpoints: dict[str, str] = {}
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for sub in page["Subscriptions"]:
            endpoints[sub["Endpoint"]] = sub["SubscriptionArn"]
    return endpoints


def _create_database(step: Step) -> None:
    if step.found is None:
        aws.client("glue", step.s).create_database(
            DatabaseInput={"Name": step.name, "Description": "Stock trend pipeline raw quote archive"}
        )


def _create_glue_table(step: Step) -> None:
    from helpers.pipeline import catalog

    catalog.ensure_table(step.s, glue=aws.client("glue", step.s))  # also updates a drifted table


def _create_workgroup(step: Step) -> None:
    if step.found is not None:
        return
    s = step.s
    aws.client("athena", s).create_work_group(
        Name=step.name,
        Configuration={
            "ResultConfiguration": {
                "OutputLocation": s.results_location,
                "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"},
            },
            "EnforceWorkGroupConfiguration": True,
            "PublishCloudWatchMetricsEnabled": False,
            "BytesScannedCutoffPerQuery": s.athena_bytes_scanned_cutoff,
        },
        Description="Stock trend pipeline analysis",
    )


def _create_role(step: Step) -> None:
    iam = aws.client("iam", step.s)
    if step.found is None:
        iam.create_role(
            RoleName=step.name,
            AssumeRolePolicyDocument=json.dumps(trust_policy()),
            Description="Stock trend pipeline Lambda role (least privilege)",
        )
    policy = role_policies(step.arns)[step.name]
    iam.put_role_policy(RoleName=step.name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))


# --- teardown --------------------------------------------------------------------------------


def teardown(settings: Settings | None = None) -> Report:
    """Delete the functions, then every registry resource in reverse order, emptying buckets first."""
    from deploy.functions import remove_functions

    s = settings or load_settings()
    report = Report()
    for result in remove_functions(s).values():
        report.add("lambda function", result["name"], result["function"])
    account = aws.account_id(s)
    for res in resources.teardown_order():
        found = resources.find(res, s, account)
        if found is None:
            report.add(res.kind, res.name(s), "absent")
            continue
        DELETERS[res.kind](s, res, found)
        report.add(res.kind, res.name(s), "deleted")
    return report


def _delete_role(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    iam, role = aws.client("iam", s), res.name(s)
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        iam.delete_role_policy(RoleName=role, PolicyName=name)
    iam.delete_role(RoleName=role)


def _delete_workgroup(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    aws.client("athena", s).delete_work_group(WorkGroup=res.name(s), RecursiveDeleteOption=True)


def _delete_glue_table(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    aws.client("glue", s).delete_table(DatabaseName=s.glue_database, Name=res.name(s))


def _delete_database(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    aws.client("glue", s).delete_database(Name=res.name(s))


def _delete_topic(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    sns, topic_arn = aws.client("sns", s), found["Attributes"]["TopicArn"]
    for sub_arn in _subscriptions(sns, topic_arn).values():
        if sub_arn.startswith("arn:"):  # not "PendingConfirmation"
            sns.unsubscribe(SubscriptionArn=sub_arn)
    sns.delete_topic(TopicArn=topic_arn)


def _delete_queue(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    aws.client("sqs", s).delete_queue(QueueUrl=found["QueueUrl"])


def _delete_bucket(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    s3, name = aws.client("s3", s), res.name(s)
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        for start in range(0, len(doomed), MAX_KEYS_PER_DELETE_OBJECTS):
            chunk = doomed[start : start + MAX_KEYS_PER_DELETE_OBJECTS]
            s3.delete_objects(Bucket=name, Delete={"Objects": chunk, "Quiet": True})
    s3.delete_bucket(Bucket=name)


def _delete_table(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    ddb, name = aws.client("dynamodb", s), res.name(s)
    ddb.delete_table(TableName=name)
    ddb.get_waiter("table_not_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": WAIT_SECONDS}
    )


def _delete_stream(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    kinesis, name = aws.client("kinesis", s), res.name(s)
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
    kinesis.get_waiter("stream_not_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": WAIT_SECONDS}
    )


# Each registry kind's create function (create if missing, then converge settings) and delete function.
CREATORS: dict[str, Callable[[Step], None]] = {
    "kinesis stream": _create_stream,
    "dynamodb table": _create_table,
    "s3 bucket": _create_bucket,
    "sqs queue": _create_queue,
    "sns topic": _create_topic,
    "glue database": _create_database,
    "glue table": _create_glue_table,
    "athena workgroup": _create_workgroup,
    "iam role": _create_role,
}
DELETERS: dict[str, Callable[[Settings, Resource, dict[str, Any]], None]] = {
    "iam role": _delete_role,
    "athena workgroup": _delete_workgroup,
    "glue table": _delete_glue_table,
    "glue database": _delete_database,
    "sns topic": _delete_topic,
    "sqs queue": _delete_queue,
    "s3 bucket": _delete_bucket,
    "dynamodb table": _delete_table,
    "kinesis stream": _delete_stream,
}
