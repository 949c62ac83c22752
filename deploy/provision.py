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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from deploy.iam import POLICY_NAME, Arns, role_policies, tls_only_policy, topic_to_queue_policy, trust_policy
from helpers.core.errors import ConfigError, PipelineError
from helpers.pipeline import aws, resources
from helpers.pipeline.config import Settings, env_key, load_settings
from helpers.pipeline.resources import Resource

__all__ = [
    "CREATORS",
    "DELETERS",
    "PROCESSED_KEY_SCHEMA",
    "ProvisionError",
    "Report",
    "ResourceResult",
    "key_schema",
    "provision",
    "teardown",
    "tls_only_policy",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
WAIT_SECONDS = 120
# SQS: "the deletion process takes up to 60 seconds"; CreateQueue answers QueueDeletedRecently meanwhile.
QUEUE_DELETION_SECONDS = 60
QUEUE_DELETED_CODES = ("AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently")
BUCKET_BUSY = "OperationAborted"  # S3 409 while a bucket of that name is still being deleted
BUSY_RETRY_SECONDS = QUEUE_DELETION_SECONDS + 30
BUSY_POLL_SECONDS = 5.0
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


class ProvisionError(PipelineError):
    """A resource could not be brought to the state the pipeline needs; the message says why."""


def foreign_bucket(field: str, name: str) -> ConfigError:
    """The error for a bucket name another account holds (S3 names are global)."""
    return ConfigError(
        field, name, "belongs to another AWS account (S3 bucket names are global)",
        f"set {env_key(field)} to a name of your own, e.g. {name}-<your initials>",
    )  # fmt: skip


def retry_while(call: Callable[[], T], codes: tuple[str, ...], what: str, s: Settings) -> T:
    """``call()``, retried while it fails with one of ``codes`` (a name AWS has not released yet).

    Says once what it waits for and gives up after :data:`BUSY_RETRY_SECONDS`.
    """
    deadline = time.monotonic() + BUSY_RETRY_SECONDS
    told = False
    while True:
        try:
            return call()
        except ClientError as err:
            if aws.error_code(err) not in codes or time.monotonic() > deadline:
                raise
            poll = 1.0 if s.is_local else BUSY_POLL_SECONDS
            if not told:
                log.warning("%s: retrying every %.0f s for up to %d s", what, poll, BUSY_RETRY_SECONDS)
                told = True
            time.sleep(poll)


# --- provisioning --------------------------------------------------------------------------


def provision(settings: Settings | None = None) -> Report:
    """Create every resource of the pipeline that is missing. Safe to run again."""
    s = settings or load_settings()
    report = Report()
    arns = Arns.for_account(s, aws.account_id(s))
    for res in resources.RESOURCES:
        found = _find(res, s, arns.account)
        step = Step(s, arns, res, res.name(s), found, report)
        CREATORS[res.kind](step)
        report.add(res.kind, step.name, "exists" if found else "created", arns.of(res.field))
    return report


def _find(res: Resource, s: Settings, account: str) -> dict[str, Any] | None:
    try:
        return resources.find(res, s, account)
    except ClientError as err:  # S3 answers 403 for a name another account holds
        if res.kind == "s3 bucket" and aws.error_code(err) in ("403", "AccessDenied", "Forbidden"):
            raise foreign_bucket(res.field, res.name(s)) from err
        raise


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
        except ClientError as err:  # an unencrypted stream is not what was asked for: say so, stop
            raise ProvisionError(
                f"stream {step.name} could not be encrypted ({aws.error_code(err)}: {err}); the runner "
                "needs kinesis:StartStreamEncryption and use of the AWS managed key alias/aws/kinesis "
                "(kms:GenerateDataKey): see deploy/runner-policy.json"
            ) from err


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
        try:
            retry_while(
                lambda: s3.create_bucket(**kwargs), (BUCKET_BUSY,),
                f"bucket {name}: S3 is still deleting a bucket of that name", step.s,
            )  # fmt: skip
        except ClientError as err:
            if aws.error_code(err) == "BucketAlreadyExists":
                raise foreign_bucket(step.resource.field, name) from err
            raise
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
        url = retry_while(
            lambda: sqs.create_queue(QueueName=step.name, Attributes=attributes)["QueueUrl"],
            QUEUE_DELETED_CODES, f"queue {step.name}: SQS is still deleting a queue of that name", step.s,
        )  # fmt: skip
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


def _create_log_group(step: Step) -> None:
    logs = aws.client("logs", step.s)
    if step.found is None:
        try:
            logs.create_log_group(logGroupName=step.name, tags={t["Key"]: t["Value"] for t in TAGS})
        except ClientError as err:  # Lambda created it first (an invocation raced the probe)
            if aws.error_code(err) != "ResourceAlreadyExistsException":
                raise
    logs.put_retention_policy(logGroupName=step.name, retentionInDays=step.resource.options["retention_days"])


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
    """Delete the queue and wait until SQS stops answering for it, so a provision that follows
    never takes the dying queue for an existing one (it then waits out ``QueueDeletedRecently``)."""
    sqs, name = aws.client("sqs", s), res.name(s)
    sqs.delete_queue(QueueUrl=found["QueueUrl"])

    def gone() -> bool:
        try:
            sqs.get_queue_url(QueueName=name)
        except ClientError as err:
            if aws.is_missing(err, *aws.QUEUE_MISSING_CODES):
                return True
            raise
        return False

    aws.wait_until(gone, f"deletion of queue {name}", QUEUE_DELETION_SECONDS + 30, poll=1.0)


def _delete_bucket(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    """Empty the bucket (every version and delete marker), then delete it.

    Each round lists from the start and deletes what it got: paging on while deleting skips
    keys (the listing's markers move under it), which left ~11,000 of 12,000 objects behind.
    """
    s3, name = aws.client("s3", s), res.name(s)
    while True:
        page = s3.list_object_versions(Bucket=name, MaxKeys=MAX_KEYS_PER_DELETE_OBJECTS)
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        if not doomed:
            break
        answer = s3.delete_objects(Bucket=name, Delete={"Objects": doomed, "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise ProvisionError(
                f"bucket {name}: {len(answer['Errors'])} objects could not be deleted "
                f"(first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})"
            )
    s3.delete_bucket(Bucket=name)


def _delete_log_group(s: Settings, res: Resource, found: dict[str, Any]) -> None:
    aws.client("logs", s).delete_log_group(logGroupName=res.name(s))


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
    "log group": _create_log_group,
}
DELETERS: dict[str, Callable[[Settings, Resource, dict[str, Any]], None]] = {
    "log group": _delete_log_group,
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
