"""Provision and tear down the pipeline's resources, idempotently, on AWS or the local stack.

``provision(settings)`` creates what is missing and brings security settings to the desired
state; a second run creates nothing and raises nothing. ``teardown(settings)`` removes every
resource named in the settings (emptying buckets first) and nothing else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from deploy.iam import POLICY_NAME, Arns, role_policies, trust_policy
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = ["Report", "ResourceResult", "provision", "teardown"]

log = logging.getLogger(__name__)

RESULTS_EXPIRY_DAYS = 7
QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
WAIT_SECONDS = 120.0

# The processed table's keys: one item per symbol and bar time.
PROCESSED_KEY_SCHEMA: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": "symbol", "AttributeType": "S"},
        {"AttributeName": "timestamp", "AttributeType": "S"},
    ],
    "KeySchema": [
        {"AttributeName": "symbol", "KeyType": "HASH"},
        {"AttributeName": "timestamp", "KeyType": "RANGE"},
    ],
}


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


# --- provisioning --------------------------------------------------------------------------


def provision(settings: Settings | None = None) -> Report:
    """Create every resource of the pipeline that is missing. Safe to run again."""
    s = settings or load_settings()
    report = Report()
    arns = Arns.for_account(s, aws.account_id(s), _partition(s))
    _stream(s, report)
    _tables(s, report)
    for bucket in (s.raw_bucket, s.results_bucket):
        _bucket(s, bucket, report, expire_days=RESULTS_EXPIRY_DAYS if bucket == s.results_bucket else None)
    _queue(s, s.failure_queue_name, report)
    _alerts(s, arns, report)
    _glue(s, report)
    _workgroup(s, report)
    _roles(s, arns, report)
    return report


def _partition(s: Settings) -> str:
    if s.region.startswith("cn-"):
        return "aws-cn"
    if s.region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _stream(s: Settings, report: Report) -> None:
    kinesis = aws.client("kinesis", s)
    try:
        summary = kinesis.describe_stream_summary(StreamName=s.stream_name)["StreamDescriptionSummary"]
        report.add("kinesis stream", s.stream_name, "exists", summary["StreamARN"])
    except ClientError as err:
        if aws.error_code(err) != "ResourceNotFoundException":
            raise
        kinesis.create_stream(StreamName=s.stream_name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
        kinesis.get_waiter("stream_exists").wait(
            StreamName=s.stream_name, WaiterConfig={"Delay": 1, "MaxAttempts": int(WAIT_SECONDS)}
        )
        summary = kinesis.describe_stream_summary(StreamName=s.stream_name)["StreamDescriptionSummary"]
        report.add("kinesis stream", s.stream_name, "created", summary["StreamARN"])
    retention = int(summary.get("RetentionPeriodHours", 24))
    if retention < s.stream_retention_hours:
        kinesis.increase_stream_retention_period(
            StreamName=s.stream_name, RetentionPeriodHours=s.stream_retention_hours
        )
    elif retention > s.stream_retention_hours:
        kinesis.decrease_stream_retention_period(
            StreamName=s.stream_name, RetentionPeriodHours=s.stream_retention_hours
        )
    if summary.get("EncryptionType", "NONE") == "NONE":
        try:
            kinesis.start_stream_encryption(
                StreamName=s.stream_name, EncryptionType="KMS", KeyId="alias/aws/kinesis"
            )
        except ClientError as err:  # pragma: no cover - depends on the account's KMS setup
            log.warning("could not enable encryption on stream %s: %s", s.stream_name, err)


def _tables(s: Settings, report: Report) -> None:
    ddb = aws.client("dynamodb", s)
    specs = {
        s.table_name: dict(
            **PROCESSED_KEY_SCHEMA,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        ),
        s.alerts_table_name: dict(
            AttributeDefinitions=[{"AttributeName": "alert_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "alert_id", "KeyType": "HASH"}],
        ),
    }
    for name, spec in specs.items():
        try:
            table = ddb.describe_table(TableName=name)["Table"]
            report.add("dynamodb table", name, "exists", table["TableArn"])
            continue
        except ClientError as err:
            if aws.error_code(err) != "ResourceNotFoundException":
                raise
        table = ddb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True},
            Tags=[{"Key": "project", "Value": "stock-trend"}],
            **spec,
        )["TableDescription"]
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        report.add("dynamodb table", name, "created", table["TableArn"])


def _bucket(s: Settings, name: str, report: Report, expire_days: int | None) -> None:
    s3 = aws.client("s3", s)
    try:
        s3.head_bucket(Bucket=name)
        report.add("s3 bucket", name, "exists", f"arn:aws:s3:::{name}")
    except ClientError as err:
        if aws.error_code(err) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": name}
        if s.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
        s3.create_bucket(**kwargs)
        report.add("s3 bucket", name, "created", f"arn:aws:s3:::{name}")
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
    if expire_days:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "expire-query-results",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "Expiration": {"Days": expire_days},
                    }
                ]
            },
        )


def tls_only_policy(bucket: str) -> dict[str, Any]:
    """Deny every request to the bucket that does not use TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def _queue(s: Settings, name: str, report: Report, policy: dict[str, Any] | None = None) -> str:
    sqs = aws.client("sqs", s)
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        report.add("sqs queue", name, "exists", url)
    except ClientError as err:
        if aws.error_code(err) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        url = sqs.create_queue(
            QueueName=name,
            Attributes={
                "MessageRetentionPeriod": str(QUEUE_RETENTION_SECONDS),
                "SqsManagedSseEnabled": "true",
            },
        )["QueueUrl"]
        report.add("sqs queue", name, "created", url)
    if policy is not None:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return str(url)


def _alerts(s: Settings, arns: Arns, report: Report) -> None:
    sns = aws.client("sns", s)
    topic_arn = _topic_arn(s)
    if topic_arn is not None:
        report.add("sns topic", s.topic_name, "exists", topic_arn)
    else:
        topic_arn = sns.create_topic(Name=s.topic_name, Tags=[{"Key": "project", "Value": "stock-trend"}])[
            "TopicArn"
        ]
        report.add("sns topic", s.topic_name, "created", topic_arn)
    queue_policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AlertsFromTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": arns.alert_queue,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    _queue(s, s.alert_queue_name, report, policy=queue_policy)
    existing = _subscriptions(sns, topic_arn)
    if arns.alert_queue not in existing:
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=arns.alert_queue,
            Attributes={"RawMessageDelivery": "true"},
        )
        report.add("sns subscription", f"sqs:{s.alert_queue_name}", "created")
    if s.alert_email and s.alert_email not in existing:
        sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=s.alert_email)
        report.add("sns subscription", f"email:{s.alert_email}", "created (confirm the email)")


def _subscriptions(sns: Any, topic_arn: str) -> dict[str, str]:
    endpoints: dict[str, str] = {}
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
        for sub in page["Subscriptions"]:
            endpoints[sub["Endpoint"]] = sub["SubscriptionArn"]
    return endpoints


def _glue(s: Settings, report: Report) -> None:
    glue = aws.client("glue", s)
    try:
        glue.get_database(Name=s.glue_database)
        report.add("glue database", s.glue_database, "exists")
    except ClientError as err:
        if aws.error_code(err) != "EntityNotFoundException":
            raise
        glue.create_database(
            DatabaseInput={"Name": s.glue_database, "Description": "Stock trend pipeline raw quote archive"}
        )
        report.add("glue database", s.glue_database, "created")
    try:
        from helpers.pipeline import catalog
    except ImportError:  # pragma: no cover - the catalog module ships with the Athena analysis
        return
    catalog.ensure_table(s, glue=glue)
    report.add("glue table", f"{s.glue_database}.{s.glue_table}", "ensured")


def _workgroup(s: Settings, report: Report) -> None:
    athena = aws.client("athena", s)
    configuration = {
        "ResultConfiguration": {
            "OutputLocation": s.results_location,
            "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"},
        },
        "EnforceWorkGroupConfiguration": True,
        "PublishCloudWatchMetricsEnabled": False,
        "BytesScannedCutoffPerQuery": s.athena_bytes_scanned_cutoff,
    }
    if _workgroup_exists(athena, s.athena_workgroup):
        report.add("athena workgroup", s.athena_workgroup, "exists")
    else:
        athena.create_work_group(
            Name=s.athena_workgroup,
            Configuration=configuration,
            Description="Stock trend pipeline analysis",
        )
        report.add("athena workgroup", s.athena_workgroup, "created")


def _workgroup_exists(athena: Any, name: str) -> bool:
    try:
        return bool(athena.get_work_group(WorkGroup=name).get("WorkGroup"))
    except ClientError as err:
        if aws.error_code(err) in ("InvalidRequestException", "ResourceNotFoundException"):
            return False
        raise


def _roles(s: Settings, arns: Arns, report: Report) -> None:
    iam = aws.client("iam", s)
    for role, policy in role_policies(arns).items():
        try:
            arn = iam.get_role(RoleName=role)["Role"]["Arn"]
            report.add("iam role", role, "exists", arn)
        except ClientError as err:
            if aws.error_code(err) != "NoSuchEntity":
                raise
            arn = iam.create_role(
                RoleName=role,
                AssumeRolePolicyDocument=json.dumps(trust_policy()),
                Description="Stock trend pipeline Lambda role (least privilege)",
            )["Role"]["Arn"]
            report.add("iam role", role, "created", arn)
        iam.put_role_policy(RoleName=role, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))


# --- teardown --------------------------------------------------------------------------------


def teardown(settings: Settings | None = None) -> Report:
    """Delete every resource named in the settings, emptying buckets first."""
    s = settings or load_settings()
    report = Report()
    try:
        from deploy.functions import remove_functions
    except ImportError:  # pragma: no cover - present once the Lambda deploy lands
        pass
    else:
        for result in remove_functions(s).values():
            report.add("lambda function", result["name"], result["function"])
    _delete_roles(s, report)
    _delete_workgroup(s, report)
    _delete_glue(s, report)
    _delete_alerts(s, report)
    _delete_queue(s, s.failure_queue_name, report)
    for bucket in (s.raw_bucket, s.results_bucket):
        _delete_bucket(s, bucket, report)
    _delete_tables(s, report)
    _delete_stream(s, report)
    return report


def _absent(err: ClientError, *codes: str) -> bool:
    return aws.error_code(err) in codes


def _delete_roles(s: Settings, report: Report) -> None:
    iam = aws.client("iam", s)
    for role in (s.processor_role, s.trend_role):
        try:
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                iam.delete_role_policy(RoleName=role, PolicyName=name)
            iam.delete_role(RoleName=role)
            report.add("iam role", role, "deleted")
        except ClientError as err:
            if not _absent(err, "NoSuchEntity"):
                raise
            report.add("iam role", role, "absent")


def _delete_workgroup(s: Settings, report: Report) -> None:
    athena = aws.client("athena", s)
    if not _workgroup_exists(athena, s.athena_workgroup):
        report.add("athena workgroup", s.athena_workgroup, "absent")
        return
    athena.delete_work_group(WorkGroup=s.athena_workgroup, RecursiveDeleteOption=True)
    report.add("athena workgroup", s.athena_workgroup, "deleted")


def _delete_glue(s: Settings, report: Report) -> None:
    glue = aws.client("glue", s)
    try:
        glue.delete_database(Name=s.glue_database)
        report.add("glue database", s.glue_database, "deleted")
    except ClientError as err:
        if not _absent(err, "EntityNotFoundException"):
            raise
        report.add("glue database", s.glue_database, "absent")


def _delete_alerts(s: Settings, report: Report) -> None:
    sns = aws.client("sns", s)
    topic_arn = _topic_arn(s)
    if topic_arn is None:
        report.add("sns topic", s.topic_name, "absent")
    else:
        for sub_arn in _subscriptions(sns, topic_arn).values():
            if sub_arn.startswith("arn:"):
                sns.unsubscribe(SubscriptionArn=sub_arn)
        sns.delete_topic(TopicArn=topic_arn)
        report.add("sns topic", s.topic_name, "deleted")
    _delete_queue(s, s.alert_queue_name, report)


def _topic_arn(s: Settings) -> str | None:
    sns = aws.client("sns", s)
    for page in sns.get_paginator("list_topics").paginate():
        for topic in page["Topics"]:
            if topic["TopicArn"].rsplit(":", 1)[-1] == s.topic_name:
                return str(topic["TopicArn"])
    return None


def _delete_queue(s: Settings, name: str, report: Report) -> None:
    sqs = aws.client("sqs", s)
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as err:
        if not _absent(err, "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        report.add("sqs queue", name, "absent")
        return
    sqs.delete_queue(QueueUrl=url)
    report.add("sqs queue", name, "deleted")


def _delete_bucket(s: Settings, name: str, report: Report) -> None:
    s3 = aws.client("s3", s)
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as err:
        if not _absent(err, "404", "NoSuchBucket", "NotFound"):
            raise
        report.add("s3 bucket", name, "absent")
        return
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=name):
        doomed = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        for start in range(0, len(doomed), 1000):  # DeleteObjects takes up to 1,000 keys
            s3.delete_objects(Bucket=name, Delete={"Objects": doomed[start : start + 1000], "Quiet": True})
    s3.delete_bucket(Bucket=name)
    report.add("s3 bucket", name, "deleted")


def _delete_tables(s: Settings, report: Report) -> None:
    ddb = aws.client("dynamodb", s)
    for name in (s.table_name, s.alerts_table_name):
        try:
            ddb.delete_table(TableName=name)
            ddb.get_waiter("table_not_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
            report.add("dynamodb table", name, "deleted")
        except ClientError as err:
            if not _absent(err, "ResourceNotFoundException"):
                raise
            report.add("dynamodb table", name, "absent")


def _delete_stream(s: Settings, report: Report) -> None:
    kinesis = aws.client("kinesis", s)
    try:
        kinesis.delete_stream(StreamName=s.stream_name, EnforceConsumerDeletion=True)
    except ClientError as err:
        if not _absent(err, "ResourceNotFoundException"):
            raise
        report.add("kinesis stream", s.stream_name, "absent")
        return

    kinesis.get_waiter("stream_not_exists").wait(
        StreamName=s.stream_name, WaiterConfig={"Delay": 1, "MaxAttempts": int(WAIT_SECONDS)}
    )
    report.add("kinesis stream", s.stream_name, "deleted")
