"""The pipeline's AWS resources, declared once: what each one is, where its name lives, its ARN.

:data:`RESOURCES` is data, not code paths. Derived from it:

* provisioning and teardown (``deploy/provision.py``): each entry's ``kind`` names its create
  and delete functions; resources are created in declaration order (an entry may use the ones
  above it: the alert queue subscribes to the topic) and deleted in reverse
  (:func:`teardown_order`), so what uses a resource goes first (the Glue table before its
  database);
* the ARNs in IAM policies (``deploy/iam.py``, :func:`arn`);
* the doctor's "was it provisioned?" checks (:mod:`helpers.notebook.doctor`, ``probe``);
* the tests' inventories (``listing``: how to list every resource of that type in an account).

``options`` are an entry's creation parameters; ``fifo_when`` names the boolean setting that
makes the topic and its queue FIFO (SNS FIFO delivers to SQS FIFO queues only, see
:mod:`helpers.pipeline.trend`), :func:`is_fifo`.

Adding a resource: a settings field for its name, one entry here, and its create/delete
functions in ``deploy/provision.py`` (a test fails until both exist). The Lambda functions are
not entries: ``deploy/functions.py`` deploys them from the built zips, after provisioning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from helpers.core.errors import ParameterError
from helpers.pipeline import aws
from helpers.pipeline.config import Settings

__all__ = [
    "RESOURCES",
    "Listing",
    "Probe",
    "Resource",
    "arn",
    "by_field",
    "find",
    "is_fifo",
    "partition",
    "probe_args",
    "region_of",
    "teardown_order",
]


@dataclass(frozen=True)
class Probe:
    """A read-only call that answers when the resource exists and fails with ``missing`` otherwise."""

    operation: str  # client method
    args: Mapping[str, str]  # argument -> template over the settings fields and {arn}
    missing: tuple[str, ...] = ("ResourceNotFoundException",)
    region_at: tuple[str, ...] = ()  # path in the answer to an ARN (or S3 location) naming its region


@dataclass(frozen=True)
class Listing:
    """How to list every resource of the type: paginated ``operation``, items under ``key``."""

    operation: str
    key: str
    name_key: str | None = None  # items are dicts: the name is under this key
    last_segment: str | None = None  # the name follows the last occurrence of this separator
    paginated: bool = True


@dataclass(frozen=True)
class Resource:
    kind: str  # names the create/delete functions and labels reports
    field: str  # Settings field holding the resource's name
    service: str  # boto3 client name
    arn: str  # template over partition, region, account and the settings fields
    probe: Probe
    listing: Listing
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # creation parameters of this entry
    template: str | None = None  # the name, when derived from ``field`` (a function's log group)

    def name(self, settings: Settings) -> str:
        if self.template is not None:
            return self.template.format(**_values(settings))
        return str(getattr(settings, self.field))


_REGIONAL = "arn:{partition}:{service}:{region}:{account}:"
LOG_RETENTION_DAYS = 14  # CloudWatch Logs keeps the functions' logs this long (default: forever)
_TABLE_KEY = {"symbol": "HASH", "timestamp": "RANGE"}  # one processed item per symbol and bar time

RESOURCES: tuple[Resource, ...] = (
    Resource(
        "kinesis stream", "stream_name", "kinesis", _REGIONAL + "stream/{stream_name}",
        Probe("describe_stream_summary", {"StreamName": "{stream_name}"},
              region_at=("StreamDescriptionSummary", "StreamARN")),
        Listing("list_streams", "StreamNames"),
    ),
    Resource(
        "dynamodb table", "table_name", "dynamodb", _REGIONAL + "table/{table_name}",
        Probe("describe_table", {"TableName": "{table_name}"}, region_at=("Table", "TableArn")),
        Listing("list_tables", "TableNames"),
        {"key": _TABLE_KEY, "stream_view": "NEW_IMAGE"},
    ),
    Resource(
        "dynamodb table", "alerts_table_name", "dynamodb", _REGIONAL + "table/{alerts_table_name}",
        Probe("describe_table", {"TableName": "{alerts_table_name}"}, region_at=("Table", "TableArn")),
        Listing("list_tables", "TableNames"),
        {"key": {"alert_id": "HASH"}},
    ),
    Resource(
        "s3 bucket", "raw_bucket", "s3", "arn:{partition}:s3:::{raw_bucket}",
        Probe("get_bucket_location", {"Bucket": "{raw_bucket}"}, aws.BUCKET_MISSING_CODES,
              region_at=("LocationConstraint",)),
        Listing("list_buckets", "Buckets", name_key="Name", paginated=False),
    ),
    Resource(
        "s3 bucket", "results_bucket", "s3", "arn:{partition}:s3:::{results_bucket}",
        Probe("get_bucket_location", {"Bucket": "{results_bucket}"}, aws.BUCKET_MISSING_CODES,
              region_at=("LocationConstraint",)),
        Listing("list_buckets", "Buckets", name_key="Name", paginated=False),
        {"expire_days": 7},  # Athena query results
    ),
    Resource(
        "sqs queue", "failure_queue_name", "sqs", _REGIONAL + "{failure_queue_name}",
        Probe("get_queue_url", {"QueueName": "{failure_queue_name}"}, aws.QUEUE_MISSING_CODES),
        Listing("list_queues", "QueueUrls", last_segment="/"),
    ),
    Resource(
        "sns topic", "topic_name", "sns", _REGIONAL + "{topic_name}",
        Probe("get_topic_attributes", {"TopicArn": "{arn}"}, ("NotFound", "NotFoundException")),
        Listing("list_topics", "Topics", name_key="TopicArn", last_segment=":"),
        {"fifo_when": "alerts_fifo"},  # an SNS FIFO topic when that setting is on
    ),
    Resource(
        "sqs queue", "alert_queue_name", "sqs", _REGIONAL + "{alert_queue_name}",
        Probe("get_queue_url", {"QueueName": "{alert_queue_name}"}, aws.QUEUE_MISSING_CODES),
        Listing("list_queues", "QueueUrls", last_segment="/"),
        {"subscribe_to": "topic_name", "fifo_when": "alerts_fifo"},  # the topic delivers alerts here
    ),
    Resource(
        "glue database", "glue_database", "glue", _REGIONAL + "database/{glue_database}",
        Probe("get_database", {"Name": "{glue_database}"}, ("EntityNotFoundException",)),
        Listing("get_databases", "DatabaseList", name_key="Name"),
    ),
    Resource(
        "glue table", "glue_table", "glue", _REGIONAL + "table/{glue_database}/{glue_table}",
        Probe("get_table", {"DatabaseName": "{glue_database}", "Name": "{glue_table}"},
              ("EntityNotFoundException",)),
        Listing("get_tables", "TableList", name_key="Name"),  # needs DatabaseName: per database
    ),
    Resource(
        "athena workgroup", "athena_workgroup", "athena", _REGIONAL + "workgroup/{athena_workgroup}",
        Probe("get_work_group", {"WorkGroup": "{athena_workgroup}"},
              ("InvalidRequestException", "ResourceNotFoundException")),
        Listing("list_work_groups", "WorkGroups", name_key="Name", paginated=False),
    ),
    Resource(
        "iam role", "processor_role", "iam", "arn:{partition}:iam::{account}:role/{processor_role}",
        Probe("get_role", {"RoleName": "{processor_role}"}, ("NoSuchEntity",)),
        Listing("list_roles", "Roles", name_key="RoleName"),
    ),
    Resource(
        "iam role", "trend_role", "iam", "arn:{partition}:iam::{account}:role/{trend_role}",
        Probe("get_role", {"RoleName": "{trend_role}"}, ("NoSuchEntity",)),
        Listing("list_roles", "Roles", name_key="RoleName"),
    ),
    # A function's log group, created with a retention before Lambda would create one without.
    *(
        Resource(
            "log group", function, "logs", _REGIONAL + "log-group:" + group,
            Probe("describe_log_streams", {"logGroupName": group}),
            Listing("describe_log_groups", "logGroups", name_key="logGroupName"),
            {"retention_days": LOG_RETENTION_DAYS},
            template=group,
        )
        for function, group in (
            ("processor_function", "/aws/lambda/{processor_function}"),
            ("trend_function", "/aws/lambda/{trend_function}"),
        )
    ),
)  # fmt: skip


def by_field(name: str) -> Resource:
    """The entry whose name is the settings field ``name``."""
    for resource in RESOURCES:
        if resource.field == name:
            return resource
    raise ParameterError(
        f"no resource is named by the settings field {name!r}: see helpers.pipeline.resources"
    )


def is_fifo(resource: Resource, settings: Settings) -> bool:
    """True when the entry is created FIFO under ``settings`` (its ``fifo_when`` setting is on)."""
    flag = resource.options.get("fifo_when")
    return bool(flag and getattr(settings, flag))


def teardown_order() -> tuple[Resource, ...]:
    """The reverse of the declaration (creation) order."""
    return tuple(reversed(RESOURCES))


def partition(region: str) -> str:
    """The ARN partition of ``region``."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _values(settings: Settings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def arn(resource: Resource, settings: Settings, account: str, partition_: str | None = None) -> str:
    """The resource's ARN in ``account`` (partition: the region's unless given)."""
    values = _values(settings)  # region is a settings field
    values.update(
        partition=partition_ or partition(settings.region), service=resource.service, account=account
    )
    return resource.arn.format(**values)


def probe_args(resource: Resource, settings: Settings, account: str) -> dict[str, str]:
    """The keyword arguments of the resource's probe call."""
    values = {**_values(settings), "arn": arn(resource, settings, account)}
    return {key: template.format(**values) for key, template in resource.probe.args.items()}


def find(resource: Resource, settings: Settings, account: str, client: Any = None) -> dict[str, Any] | None:
    """The probe's answer, or ``None`` when the resource does not exist (other errors propagate)."""
    from botocore.exceptions import ClientError

    service = client or aws.client(resource.service, settings)
    try:
        return dict(getattr(service, resource.probe.operation)(**probe_args(resource, settings, account)))
    except ClientError as err:
        if aws.is_missing(err, *resource.probe.missing):
            return None
        raise


def region_of(resource: Resource, answer: Mapping[str, Any]) -> str | None:
    """The region the probe's answer places the resource in (``None``: it does not say)."""
    if not resource.probe.region_at:
        return None
    value: Any = answer
    for key in resource.probe.region_at:
        value = value.get(key) if isinstance(value, Mapping) else None
    if isinstance(value, str) and value.startswith("arn:"):
        return value.split(":")[3] or None
    if resource.service == "s3":  # GetBucketLocation: no constraint means us-east-1, "EU" eu-west-1
        return {"": "us-east-1", "EU": "eu-west-1"}.get(value or "", value)
    return None
