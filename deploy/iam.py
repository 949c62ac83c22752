"""Least-privilege IAM documents for the two Lambda functions.

Each policy lists exact actions (never ``*`` or ``service:*``) on the ARNs of this pipeline's
own resources only. The documents are pure data so tests can inspect them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from helpers.pipeline.config import Settings

__all__ = ["POLICY_NAME", "Arns", "processor_policy", "role_policies", "trend_policy", "trust_policy"]

POLICY_NAME = "least-privilege"


@dataclass(frozen=True)
class Arns:
    """ARNs of the pipeline's resources in one account and region."""

    partition: str
    region: str
    account: str
    settings: Settings

    @classmethod
    def for_account(cls, settings: Settings, account: str, partition: str = "aws") -> Arns:
        return cls(partition, settings.region, account, settings)

    def _arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{self.account}:{resource}"

    @property
    def stream(self) -> str:
        return self._arn("kinesis", f"stream/{self.settings.stream_name}")

    @property
    def table(self) -> str:
        return self._arn("dynamodb", f"table/{self.settings.table_name}")

    @property
    def table_streams(self) -> str:
        return self._arn("dynamodb", f"table/{self.settings.table_name}/stream/*")

    @property
    def alerts_table(self) -> str:
        return self._arn("dynamodb", f"table/{self.settings.alerts_table_name}")

    @property
    def topic(self) -> str:
        return self._arn("sns", self.settings.topic_name)

    @property
    def failure_queue(self) -> str:
        return self._arn("sqs", self.settings.failure_queue_name)

    @property
    def alert_queue(self) -> str:
        return self._arn("sqs", self.settings.alert_queue_name)

    def bucket(self, name: str) -> str:
        return f"arn:{self.partition}:s3:::{name}"

    def log_group(self, function: str) -> str:
        return self._arn("logs", f"log-group:/aws/lambda/{function}:*")

    def role(self, name: str) -> str:
        return f"arn:{self.partition}:iam::{self.account}:role/{name}"

    def function(self, name: str) -> str:
        return self._arn("lambda", f"function:{name}")

    @property
    def glue_catalog(self) -> str:
        return self._arn("glue", "catalog")

    @property
    def glue_database(self) -> str:
        return self._arn("glue", f"database/{self.settings.glue_database}")

    @property
    def glue_table(self) -> str:
        return self._arn("glue", f"table/{self.settings.glue_database}/{self.settings.glue_table}")


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
        "Resource": [arns.failure_queue],
    }


def processor_policy(arns: Arns) -> dict[str, Any]:
    """Read the quote stream; write raw/, quarantine/ and manifests/ objects and processed items."""
    from helpers.pipeline.processor import MANIFEST_PREFIX

    s = arns.settings
    bucket = arns.bucket(s.raw_bucket)
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
                "Resource": [arns.stream],
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
                ],
            },
            {
                "Sid": "WriteProcessedItems",
                "Effect": "Allow",
                "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem"],
                "Resource": [arns.table],
            },
            {
                "Sid": "RegisterRawPartitions",
                "Effect": "Allow",
                "Action": ["glue:GetTable", "glue:GetPartitions", "glue:BatchCreatePartition"],
                "Resource": [arns.glue_catalog, arns.glue_database, arns.glue_table],
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
                "Resource": [arns.table_streams],
            },
            {
                "Sid": "ReadPriceHistory",
                "Effect": "Allow",
                "Action": ["dynamodb:Query"],
                "Resource": [arns.table],
            },
            {
                "Sid": "RecordSentAlerts",
                "Effect": "Allow",
                "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem"],
                "Resource": [arns.alerts_table],
            },
            {
                "Sid": "PublishAlerts",
                "Effect": "Allow",
                "Action": ["sns:Publish"],
                "Resource": [arns.topic],
            },
            _failure_queue(arns),
            _logs(arns, s.trend_function),
        ],
    }


def role_policies(arns: Arns) -> dict[str, dict[str, Any]]:
    """Role name → its inline policy document."""
    s = arns.settings
    return {s.processor_role: processor_policy(arns), s.trend_role: trend_policy(arns)}
