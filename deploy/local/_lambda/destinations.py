"""On-failure destinations of stream mappings: the invocation record AWS sends, and sending it.

When a batch exhausts ``MaximumRetryAttempts`` or its records pass ``MaximumRecordAgeInSeconds``,
Lambda sends metadata about it (not the records) to ``DestinationConfig.OnFailure``: an SQS
queue, an SNS topic or (Kinesis) an S3 bucket. The document has ``requestContext``,
``responseContext``, ``version``, ``timestamp`` and ``KinesisBatchInfo`` / ``DDBStreamBatchInfo``.
Sending goes through the stack's own endpoint with boto3, like any client, marked as the stack's
own request so a fault plan leaves it alone unless the plan says ``"internal": true``. With IAM
enforced it is signed, as on AWS, with the function's execution role (``sqs:SendMessage``,
``sns:Publish`` or ``s3:PutObject`` on the destination), so a role without it loses the record
(logged); finding the queue's URL is the stack's own look-up.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from typing import Any

from deploy.local._lambda.models import LATEST, MappingConfig, Outcome, lambda_backends
from deploy.local._lambda.sources import SourceRecord
from deploy.local.faults import INTERNAL_AGENT

log = logging.getLogger(__name__)

RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
BATCH_INFO_KEY = {"kinesis": "KinesisBatchInfo", "dynamodb": "DDBStreamBatchInfo"}


def _iso(epoch: float, millis: bool) -> str:
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return (
        stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if millis else stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def failure_record(
    cfg: MappingConfig,
    shard_id: str,
    records: list[SourceRecord],
    condition: str,
    outcome: Outcome | None,
    invoke_count: int,
    now: float,
) -> dict[str, Any]:
    """The JSON document Lambda sends to an on-failure destination for a discarded batch."""
    kind = cfg.source_kind
    millis = kind == "kinesis"
    document: dict[str, Any] = {
        "requestContext": {
            "requestId": outcome.request_id if outcome else str(uuid.uuid4()),
            "functionArn": cfg.function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "version": "1.0",
        "timestamp": _iso(now, True),
    }
    if outcome is not None:
        response: dict[str, Any] = {"statusCode": 200, "executedVersion": LATEST}
        if outcome.function_error:
            response["functionError"] = "Unhandled"
        document["responseContext"] = response
    document[BATCH_INFO_KEY.get(kind, "BatchInfo")] = {
        "shardId": shard_id,
        "startSequenceNumber": str(records[0].seq),
        "endSequenceNumber": str(records[-1].seq),
        "approximateArrivalOfFirstRecord": _iso(records[0].arrival, millis),
        "approximateArrivalOfLastRecord": _iso(records[-1].arrival, millis),
        "batchSize": len(records),
        "streamArn": cfg.source_arn,
    }
    return document


class Destinations:
    """Sends on-failure documents to SQS, SNS or S3 through the local stack's endpoint."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._roles: dict[str, dict[str, str]] = {}  # function ARN -> its role's boto3 keys
        self._lock = threading.Lock()

    def _role_keys(self, function_arn: str, region: str) -> dict[str, str] | None:
        """The function's execution role session (IAM enforced), else None (the stack's own keys)."""
        from deploy.local import access

        if not access.gate().enabled or not function_arn:
            return None
        with self._lock:
            if function_arn in self._roles:
                return self._roles[function_arn]
        try:
            parts = function_arn.split(":")
            fn = lambda_backends()[parts[4]][parts[3]].get_function(parts[6])
            env = access.function_credentials(str(fn.role), parts[6], region)
        except Exception as err:  # the function or its role is gone: the send fails as on AWS
            log.error("no credentials of %s's execution role: %s", function_arn, err)
            env = {"AWS_ACCESS_KEY_ID": "none", "AWS_SECRET_ACCESS_KEY": "none", "AWS_SESSION_TOKEN": "none"}
        keys = {
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "aws_session_token": env["AWS_SESSION_TOKEN"],
        }
        with self._lock:
            return self._roles.setdefault(function_arn, keys)

    def _client(self, service: str, region: str, keys: dict[str, str] | None = None) -> Any:
        with self._lock:
            key = (service, region, (keys or {}).get("aws_access_key_id", ""))
            if key not in self._clients:
                import boto3
                from botocore.config import Config

                from deploy.local.access import internal_credentials

                session = boto3.session.Session(region_name=region, **(keys or internal_credentials()))
                config = Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=5,
                    read_timeout=30,
                    user_agent_extra=INTERNAL_AGENT,  # exempt from the fault plan (AWS's own plumbing)
                )
                self._clients[key] = session.client(service, endpoint_url=self.endpoint, config=config)
            return self._clients[key]

    def send(self, destination: str, document: dict[str, Any], mapping_uuid: str) -> bool:
        """Deliver ``document``; False (and an error log) when the destination cannot take it."""
        parts = destination.split(":")
        service, region, account, resource = parts[2], parts[3], parts[4], ":".join(parts[5:])
        body = json.dumps(document)
        keys = self._role_keys(str(document.get("requestContext", {}).get("functionArn", "")), region)
        try:
            if service == "sqs":
                sqs = self._client("sqs", region)
                url = sqs.get_queue_url(QueueName=resource, QueueOwnerAWSAccountId=account)["QueueUrl"]
                self._client("sqs", region, keys).send_message(QueueUrl=url, MessageBody=body)
            elif service == "sns":
                self._client("sns", region, keys).publish(TopicArn=destination, Message=body)
            elif service == "s3":
                info: dict[str, Any] = next((v for k, v in document.items() if k.endswith("BatchInfo")), {})
                stamp = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d/%Y-%m-%dT%H.%M.%S")
                key = f"aws/lambda/{mapping_uuid}/{info.get('shardId', 'shard')}/{stamp}-{uuid.uuid4()}"
                self._client("s3", region or "us-east-1", keys).put_object(
                    Bucket=resource, Key=key, Body=body.encode()
                )
            else:
                log.error(
                    "on-failure destination %s is not an SQS queue, SNS topic or S3 bucket", destination
                )
                return False
        except Exception as err:
            log.error("sending an on-failure record to %s failed: %s", destination, err)
            return False
        return True
