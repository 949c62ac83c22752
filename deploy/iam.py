"""Least-privilege IAM documents for the two Lambda functions and for whoever runs the notebooks.

Each policy lists exact actions (never ``*`` or ``service:*``) on the ARNs of this pipeline's
own resources only. The documents are pure data so tests can inspect them. The runner's
(:func:`runner_policy`) is shipped as ``deploy/runner-policy.json`` with ``ACCOUNT_ID`` and
``REGION`` placeholders; ``python -m deploy.iam runner-policy`` prints it for your settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.pipeline import resources
from helpers.pipeline.config import Settings

__all__ = [
    "IAM_ACTION_OF",
    "POLICY_NAME",
    "RUNNER_POLICY_FILE",
    "Arns",
    "iam_action",
    "processor_policy",
    "role_policies",
    "runner_actions",
    "runner_policy",
    "runner_policy_template",
    "tls_only_policy",
    "topic_to_queue_policy",
    "trend_policy",
    "trust_policy",
]

POLICY_NAME = "least-privilege"


@dataclass(frozen=True)
class Arns:
    """ARNs of the pipeline's resources in one account and region, from the resource registry."""

    partition: str
    region: str
    account: str
    settings: Settings

    @classmethod
    def for_account(cls, settings: Settings, account: str, partition: str | None = None) -> Arns:
        return cls(partition or resources.partition(settings.region), settings.region, account, settings)

    def of(self, field: str) -> str:
        """The ARN of the resource named by the settings field ``field``."""
        return resources.arn(resources.by_field(field), self.settings, self.account, self.partition)

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"

    def log_group(self, function: str) -> str:
        return self._arn("logs", f"log-group:/aws/lambda/{function}:*")

    def function(self, name: str) -> str:
        return self._arn("lambda", f"function:{name}")

    @property
    def glue_catalog(self) -> str:
        return self._arn("glue", "catalog")


def trust_policy() -> dict[str, Any]:
    """Only the Lambda service may assume the pipeline's roles."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def _logs(arns: Arns, function: str) -> dict[str, Any]:
    return {
        "Sid": "OwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [arns.log_group(function)],
    }


def _failure_queue(arns: Arns) -> dict[str, Any]:
    return {
        "Sid": "OnFailureDestination",
        "Effect": "Allow",
        "Action": ["sqs:SendMessage"],
        "Resource": [arns.of("failure_queue_name")],
    }


def processor_policy(arns: Arns) -> dict[str, Any]:
    """Read the quote stream; write raw/, quarantine/, manifests/, parked/ and checkpoints/; write items."""
    from helpers.core.layout import CHECKPOINT_PREFIX, PARKED_PREFIX
    from helpers.pipeline.processor import MANIFEST_PREFIX

    s = arns.settings
    bucket = arns.of("raw_bucket")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadQuoteStream",
                "Effect": "Allow",
                "Action": [
                    "kinesis:DescribeStream",
                    "kinesis:DescribeStreamSummary",
                    "kinesis:GetRecords",
                    "kinesis:GetShardIterator",
                    "kinesis:ListShards",
                ],
                "Resource": [arns.of("stream_name")],
            },
            {
                # DeleteObject: after a partial failure, objects are cut back to the committed prefix
                "Sid": "WriteRawArchive",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": [
                    f"{bucket}/{s.raw_prefix}*",
                    f"{bucket}/{s.quarantine_prefix}*",
                    f"{bucket}/{MANIFEST_PREFIX}*",
                    f"{bucket}/{PARKED_PREFIX}*",
                ],
            },
            {
                # the per-shard commit: read before a batch, written after it
                "Sid": "ShardCheckpoints",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": [f"{bucket}/{CHECKPOINT_PREFIX}*"],
            },
            {
                # without it S3 answers GetObject of a shard's first checkpoint with 403, not 404
                # (the check carries no s3:prefix, so a prefix condition would not help)
                "Sid": "FindShardCheckpoints",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [bucket],
            },
            {
                # UpdateItem: the mark of a gap-free run for the trend Lambda; DeleteItem: what an
                # attempt wrote for records Lambda then gave up on
                "Sid": "WriteProcessedItems",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:BatchWriteItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                ],
                "Resource": [arns.of("table_name")],
            },
            {
                "Sid": "RegisterRawPartitions",
                "Effect": "Allow",
                "Action": ["glue:GetTable", "glue:GetPartitions", "glue:BatchCreatePartition"],
                "Resource": [arns.glue_catalog, arns.of("glue_database"), arns.of("glue_table")],
            },
            _failure_queue(arns),
            _logs(arns, s.processor_function),
        ],
    }


def trend_policy(arns: Arns) -> dict[str, Any]:
    """Read the processed table's stream and history; record and publish alerts."""
    s = arns.settings
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadProcessedStream",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams",
                ],
                "Resource": [arns.of("table_name") + "/stream/*"],
            },
            {
                "Sid": "ReadPriceHistory",
                "Effect": "Allow",
                "Action": ["dynamodb:Query"],
                "Resource": [arns.of("table_name")],
            },
            {
                "Sid": "RecordSentAlerts",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:PutItem",
                    "dynamodb:GetItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:BatchGetItem",
                ],
                "Resource": [arns.of("alerts_table_name")],
            },
            {
                "Sid": "PublishAlerts",
                "Effect": "Allow",
                "Action": ["sns:Publish"],  # PublishBatch is authorised by sns:Publish
                "Resource": [arns.of("topic_name")],
            },
            _failure_queue(arns),
            _logs(arns, s.trend_function),
        ],
    }


def role_policies(arns: Arns) -> dict[str, dict[str, Any]]:
    """Role name → its inline policy document."""
    s = arns.settings
    return {s.processor_role: processor_policy(arns), s.trend_role: trend_policy(arns)}


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


def topic_to_queue_policy(queue_arn: str, topic_arn: str) -> dict[str, Any]:
    """Only the pipeline's topic may send to the queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AlertsFromTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }


# --- the runner: the person (or CI role) running the notebooks -----------------------------------

# API operations whose IAM action has another name (the rest are "<service>:<Operation>").
IAM_ACTION_OF = {
    "s3:DeleteObjects": "s3:DeleteObject",
    "s3:GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "s3:PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    # batch APIs are authorised by their single-entry actions
    "sns:PublishBatch": "sns:Publish",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}

# What each service's calls may touch: ARN templates over the registry (Arns.of) and "*" where
# the action has no resource-level permission (STS identity, prices, creating/listing mappings).
_RUNNER_ACTIONS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Identity", ("sts:GetCallerIdentity",), ("*",)),
    ("Prices", ("pricing:GetProducts",), ("*",)),  # 07's cost section on AWS
    ("QuoteStream", (
        "kinesis:CreateStream", "kinesis:DeleteStream", "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:PutRecords",
        "kinesis:StartStreamEncryption", "kinesis:IncreaseStreamRetentionPeriod",
        "kinesis:DecreaseStreamRetentionPeriod", "kinesis:AddTagsToStream",
    ), ("stream_name",)),
    ("Tables", (
        "dynamodb:CreateTable", "dynamodb:DeleteTable", "dynamodb:DescribeTable", "dynamodb:Query",
        "dynamodb:Scan", "dynamodb:TagResource",
    ), ("table_name", "alerts_table_name")),
    ("Buckets", (
        "s3:CreateBucket", "s3:DeleteBucket", "s3:GetBucketLocation", "s3:ListBucket",
        "s3:ListBucketVersions", "s3:PutBucketPublicAccessBlock", "s3:GetBucketPublicAccessBlock",
        "s3:PutBucketOwnershipControls", "s3:PutEncryptionConfiguration", "s3:GetEncryptionConfiguration",
        "s3:PutBucketPolicy", "s3:PutLifecycleConfiguration",
    ), ("raw_bucket", "results_bucket")),
    ("BucketObjects", (
        "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
    ), ("raw_bucket/*", "results_bucket/*")),
    ("Queues", (
        "sqs:CreateQueue", "sqs:DeleteQueue", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
        "sqs:SetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:TagQueue",
    ), ("failure_queue_name", "alert_queue_name")),
    ("AlertTopic", (
        "sns:CreateTopic", "sns:DeleteTopic", "sns:GetTopicAttributes", "sns:ListSubscriptionsByTopic",
        "sns:Subscribe", "sns:Unsubscribe", "sns:TagResource",
    ), ("topic_name",)),
    ("Catalog", (
        "glue:CreateDatabase", "glue:DeleteDatabase", "glue:GetDatabase", "glue:CreateTable",
        "glue:DeleteTable", "glue:GetTable", "glue:UpdateTable", "glue:BatchCreatePartition",
        "glue:GetPartition", "glue:GetPartitions", "glue:BatchGetPartition",
    ), ("glue:catalog", "glue_database", "glue_table")),
    ("Athena", (
        "athena:CreateWorkGroup", "athena:DeleteWorkGroup", "athena:GetWorkGroup",
        "athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults",
        "athena:StopQueryExecution", "athena:ListQueryExecutions", "athena:BatchGetQueryExecution",
    ), ("athena_workgroup",)),
    ("LambdaRoles", (
        "iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
        "iam:ListRolePolicies",
    ), ("processor_role", "trend_role")),
    ("Functions", (
        "lambda:CreateFunction", "lambda:DeleteFunction", "lambda:GetFunction",
        "lambda:GetFunctionConfiguration", "lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration",
    ), ("lambda:processor_function", "lambda:trend_function")),
    ("EventSourceMappings", (
        "lambda:CreateEventSourceMapping", "lambda:DeleteEventSourceMapping", "lambda:GetEventSourceMapping",
        "lambda:ListEventSourceMappings", "lambda:UpdateEventSourceMapping",
    ), ("*",)),
    ("FunctionLogs", (
        "logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:DescribeLogStreams", "logs:FilterLogEvents",
        "logs:PutRetentionPolicy", "logs:TagResource",
    ), ("processor_function", "trend_function")),
)  # fmt: skip


def _runner_resource(arns: Arns, ref: str) -> list[str]:
    if ref == "*":
        return ["*"]
    if ref == "glue:catalog":
        return [arns.glue_catalog]
    if ref.startswith("lambda:"):
        return [arns.function(getattr(arns.settings, ref.removeprefix("lambda:")))]
    field, _, objects = ref.partition("/")
    arn = arns.of(field)
    if field in ("processor_function", "trend_function"):  # the registry's log group entries
        return [arn, f"{arn}:*"]
    return [f"{arn}/{objects}"] if objects else [arn]


def runner_policy(arns: Arns) -> dict[str, Any]:
    """The least privilege of whoever runs the notebooks: every call of 00-07, scoped to this
    pipeline's resources, and ``iam:PassRole`` of the two execution roles to Lambda only."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": sid,
            "Effect": "Allow",
            "Action": list(actions),
            "Resource": [arn for ref in refs for arn in _runner_resource(arns, ref)],
        }
        for sid, actions, refs in _RUNNER_ACTIONS
    ]
    statements.append(
        {
            "Sid": "PassExecutionRoles",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": [arns.of("processor_role"), arns.of("trend_role")],
            "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}},
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def runner_actions(policy: dict[str, Any]) -> set[str]:
    """Every action a policy allows (by name)."""
    return {a for st in policy["Statement"] if st["Effect"] == "Allow" for a in st["Action"]}


def iam_action(call: str) -> str:
    """The IAM action of an API call ``<service>:<Operation>`` (as :data:`IAM_ACTION_OF` maps it)."""
    return IAM_ACTION_OF.get(call, call)


RUNNER_POLICY_FILE = Path(__file__).with_name("runner-policy.json")


def runner_policy_template() -> dict[str, Any]:
    """The runner policy with ``ACCOUNT_ID`` and ``REGION`` placeholders and the default names
    (what ``deploy/runner-policy.json`` holds)."""
    from helpers.pipeline.config import load_settings

    s = load_settings(environ={}, target="aws", region="us-east-1", account_id="111122223333")
    text = json.dumps(runner_policy(Arns.for_account(s, "111122223333")), indent=2)
    text = text.replace("111122223333", "ACCOUNT_ID").replace("us-east-1", "REGION")
    return dict(json.loads(text))


def runner_policy_markdown(policy: dict[str, Any] | None = None) -> str:
    """The runner policy as a Markdown table, one row per statement (what the README shows)."""
    rows = ["| statement | actions | resources |", "|---|---|---|"]
    for st in (policy or runner_policy_template())["Statement"]:
        resources = "<br>".join(f"`{r.removeprefix('arn:aws:')}`" for r in st["Resource"])
        condition = f" (when {json.dumps(st['Condition'])})" if "Condition" in st else ""
        rows.append(f"| {st['Sid']} | {', '.join(st['Action'])} | {resources}{condition} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.iam runner-policy``: the runner policy for the resolved settings;
    ``runner-policy-template`` rewrites ``deploy/runner-policy.json``."""
    import sys

    from helpers.pipeline import aws
    from helpers.pipeline.config import load_settings

    args = sys.argv[1:] if argv is None else argv
    if args == ["runner-policy-template"]:  # rewrite deploy/runner-policy.json
        RUNNER_POLICY_FILE.write_text(json.dumps(runner_policy_template(), indent=2) + "\n")
        return 0
    if args == ["runner-policy-markdown"]:  # the README's table
        print(runner_policy_markdown(), end="")
        return 0
    if args != ["runner-policy"]:
        usage = "usage: python -m deploy.iam runner-policy | runner-policy-template | runner-policy-markdown"
        print(usage, file=sys.stderr)
        return 2
    s = load_settings()
    print(json.dumps(runner_policy(Arns.for_account(s, s.account_id or aws.account_id(s))), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
