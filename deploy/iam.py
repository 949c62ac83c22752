"""Least-privilege IAM documents for the two Lambda functions.

Each policy lists exact actions (never ``*`` or ``service:*``) on the ARNs of this pipeline's
own resources only. The documents are pure data so tests can inspect them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from helpers.pipeline import resources
from helpers.pipeline.config import Settings

__all__ = [
    "POLICY_NAME",
    "Arns",
    "processor_policy",
    "role_policies",
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
