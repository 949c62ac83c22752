"""AWS behaviours moto forgives, reproduced in the local stack so code that works here works there.

* **A deleted SQS queue's name is unavailable for a while.** AWS: "when you delete a queue, the
  deletion process takes up to 60 seconds"; CreateQueue with that name answers
  ``QueueDeletedRecently`` until then, and requests naming the dying queue "might succeed"
  meanwhile. Here CreateQueue is refused for :data:`QUEUE_DELETION_ENV` seconds (default 60, as
  on AWS) and GetQueueUrl still finds the dying queue for :data:`QUEUE_DYING_ENV` seconds
  (default 2), so provisioning right after a teardown meets both, as it would on AWS.

* **A just-deleted bucket's name is busy for a moment.** S3 answers CreateBucket with 409
  ``OperationAborted`` ("A conflicting conditional operation is currently in progress against
  this resource") while a bucket of that name is still being deleted. Here that lasts
  :data:`BUCKET_DELETION_ENV` seconds after DeleteBucket (default 2).

* **A Kinesis shard takes 1,000 records and 1 MiB per second** (data plus partition key). Over
  that, PutRecords fails the entries with ``ProvisionedThroughputExceededException`` (the others
  are stored) and PutRecord fails; :data:`SHARD_LIMITS_ENV` ``=0`` turns it off. The limits and
  the token buckets are :mod:`helpers.core.shard_limits`, which the producer paces itself by.

The settings are read from the stack process's environment when it starts (``0`` turns a rule
off). :func:`install` patches moto's backends once per process; :func:`counters` says how often
each rule answered.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

__all__ = ["QUEUE_DELETED_RECENTLY", "QUEUE_DELETION_ENV", "QUEUE_DYING_ENV", "install", "windows"]

SHARD_LIMITS_ENV = "STP_LOCAL_SHARD_LIMITS"
QUEUE_DELETION_ENV = "STP_LOCAL_QUEUE_DELETION_SECONDS"
QUEUE_DYING_ENV = "STP_LOCAL_QUEUE_DYING_SECONDS"
BUCKET_DELETION_ENV = "STP_LOCAL_BUCKET_DELETION_SECONDS"
DEFAULT_BUCKET_DELETION_SECONDS = 2.0
DEFAULT_QUEUE_DELETION_SECONDS = 60.0
DEFAULT_QUEUE_DYING_SECONDS = 2.0

_installed = False
_lock = threading.Lock()
_rules: dict[str, float] = {}  # the windows and switches in force (install)
_counters = {"queue_deleted_recently": 0, "dying_queue_answers": 0, "throttled_records": 0, "bucket_busy": 0}


def counters() -> dict[str, int]:
    """How often each rule answered in this process (for the stack's health and the tests)."""
    with _lock:
        return dict(_counters)


def _count(name: str, n: int = 1) -> None:
    with _lock:
        _counters[name] += n


def windows(environ: dict[str, str] | None = None) -> dict[str, float]:
    """The rules' windows in seconds, from ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ

    def seconds(name: str, default: float) -> float:
        text = env.get(name, "")
        try:
            value = float(text) if text.strip() else default
        except ValueError as err:
            raise ValueError(f"{name}={text!r}: give a number of seconds (0 turns the rule off)") from err
        if value < 0:
            raise ValueError(f"{name}={text!r}: give a number of seconds >= 0")
        return value

    limits = env.get(SHARD_LIMITS_ENV, "1").strip().lower()
    if limits not in ("0", "1", "false", "true", "off", "on"):
        raise ValueError(f"{SHARD_LIMITS_ENV}={limits!r}: give 1 (AWS's per-shard limits) or 0 (none)")
    return {
        "queue_deletion_seconds": seconds(QUEUE_DELETION_ENV, DEFAULT_QUEUE_DELETION_SECONDS),
        "queue_dying_seconds": seconds(QUEUE_DYING_ENV, DEFAULT_QUEUE_DYING_SECONDS),
        "bucket_deletion_seconds": seconds(BUCKET_DELETION_ENV, DEFAULT_BUCKET_DELETION_SECONDS),
        "shard_limits": float(limits in ("1", "true", "on")),
    }


def _queue_deleted_recently() -> Exception:
    from moto.sqs.exceptions import SQSException

    class QueueDeletedRecentlyError(SQSException):
        def __init__(self) -> None:
            super().__init__(
                QUEUE_DELETED_RECENTLY,
                "You must wait 60 seconds after deleting a queue before you can create another "
                "with the same name.",
            )

    return QueueDeletedRecentlyError()


QUEUE_DELETED_RECENTLY = "AWS.SimpleQueueService.QueueDeletedRecently"  # the error code boto3 shows


def install(environ: dict[str, str] | None = None) -> dict[str, float]:
    """Patch moto's SQS backend with the queue-deletion rules; returns the windows in force."""
    global _installed
    rules = windows(environ)
    from moto.sqs.models import SQSBackend

    with _lock:
        _rules.clear()
        _rules.update(rules)
        if _installed:
            return rules
        original_create, original_delete, original_get = (
            SQSBackend.create_queue,
            SQSBackend.delete_queue,
            SQSBackend.get_queue,
        )

        def dying(backend: Any) -> dict[str, tuple[Any, float]]:
            table: dict[str, tuple[Any, float]] | None = backend.__dict__.get("_stp_dying")
            if table is None:
                table = backend.__dict__.setdefault("_stp_dying", {})
            return table

        def create_queue(self: Any, name: str, tags: Any = None, **kwargs: Any) -> Any:
            gone = dying(self).get(name)
            if gone is not None and name not in self.queues:
                if time.monotonic() - gone[1] < _rules["queue_deletion_seconds"]:
                    _count("queue_deleted_recently")
                    raise _queue_deleted_recently()
                dying(self).pop(name, None)
            return original_create(self, name, tags, **kwargs)

        def delete_queue(self: Any, queue_name: str) -> None:
            queue = self.queues.get(queue_name)
            if queue is None:
                self.get_queue(queue_name)  # a dying queue: deleting it again succeeds, as on AWS
                return
            original_delete(self, queue_name)
            if queue is not None and _rules["queue_deletion_seconds"] > 0:
                dying(self)[queue_name] = (queue, time.monotonic())

        def get_queue(self: Any, queue_name: str) -> Any:
            queue = self.queues.get(queue_name)
            if queue is not None:
                return queue
            gone = dying(self).get(queue_name)
            if gone is not None and time.monotonic() - gone[1] < _rules["queue_dying_seconds"]:
                _count("dying_queue_answers")
                return gone[0]  # AWS: requests naming a queue being deleted "might succeed"
            return original_get(self, queue_name)

        SQSBackend.create_queue = create_queue  # type: ignore[method-assign]
        SQSBackend.delete_queue = delete_queue  # type: ignore[method-assign]
        SQSBackend.get_queue = get_queue  # type: ignore[method-assign]
        _install_shard_limits()
        _install_bucket_deletion()
        _installed = True
    return rules


def _throughput_exceeded(shard_id: str, stream_name: str, account: str) -> dict[str, str]:
    return {
        "ErrorCode": "ProvisionedThroughputExceededException",
        "ErrorMessage": f"Rate exceeded for shard {shard_id} in stream {stream_name} under account {account}",
    }


def _install_shard_limits() -> None:
    """PutRecords/PutRecord through per-shard token buckets (records and bytes per second)."""
    from base64 import b64decode

    from moto.core.exceptions import JsonRESTError
    from moto.kinesis.models import KinesisBackend

    from helpers.core.shard_limits import BYTES_PER_SECOND, RECORDS_PER_SECOND, TokenBucket

    original_put_records, original_put_record = KinesisBackend.put_records, KinesisBackend.put_record
    buckets: dict[tuple[str, str], tuple[TokenBucket, TokenBucket]] = {}
    guard = threading.Lock()

    def admit(stream: Any, key: str, explicit: str | None, size: int) -> str | None:
        """The shard id when over its limits (nothing taken), else None (the record's share taken)."""
        shard = stream.get_shard_for_key(key, explicit)
        with guard:
            records, volume = buckets.setdefault(
                (stream.arn, shard.shard_id), (TokenBucket(RECORDS_PER_SECOND), TokenBucket(BYTES_PER_SECOND))
            )
            if records.wait_for(1) > 0 or volume.wait_for(size) > 0:
                return str(shard.shard_id)
            records.take(1)
            volume.take(size)
        return None

    def put_records(self: Any, stream_arn: str, stream_name: str, records: list[dict[str, Any]]) -> Any:
        if not _rules.get("shard_limits") or len(records) > 500:  # moto's own checks answer the oversize call
            return original_put_records(self, stream_arn, stream_name, records)
        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        verdicts = [
            admit(stream, r.get("PartitionKey", ""), r.get("ExplicitHashKey"),
                  len(b64decode(r.get("Data", ""))) + len(r.get("PartitionKey", "").encode()))
            for r in records
        ]  # fmt: skip
        accepted = [r for r, shard in zip(records, verdicts, strict=True) if shard is None]
        stored = iter(
            original_put_records(self, stream_arn, stream_name, accepted)["Records"] if accepted else []
        )
        answers = [
            next(stored)
            if shard is None
            else _throughput_exceeded(shard, stream.stream_name, self.account_id)
            for shard in verdicts
        ]
        failed = sum(shard is not None for shard in verdicts)
        if failed:
            _count("throttled_records", failed)
        return {"FailedRecordCount": failed, "Records": answers}

    def put_record(
        self: Any, stream_arn: str, stream_name: str, partition_key: str, explicit_hash_key: str, data: str
    ) -> Any:
        if _rules.get("shard_limits"):
            stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
            size = len(b64decode(data)) + len(partition_key.encode())
            shard = admit(stream, partition_key, explicit_hash_key, size)
            if shard is not None:
                _count("throttled_records")
                error = _throughput_exceeded(shard, stream.stream_name, self.account_id)
                raise JsonRESTError(error["ErrorCode"], error["ErrorMessage"])
        return original_put_record(self, stream_arn, stream_name, partition_key, explicit_hash_key, data)

    KinesisBackend.put_records = put_records  # type: ignore[method-assign]
    KinesisBackend.put_record = put_record  # type: ignore[method-assign]


OPERATION_ABORTED = "OperationAborted"


def _operation_aborted(bucket: str) -> Exception:
    """S3's 409 as a werkzeug HTTPException (moto gives error codes its S3 model lacks a 400)."""
    from werkzeug.exceptions import Conflict

    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>OperationAborted</Code>'
        "<Message>A conflicting conditional operation is currently in progress against this "
        f"resource. Please try again.</Message><BucketName>{bucket}</BucketName></Error>"
    )

    class OperationAborted(Conflict):
        def get_body(self, environ: Any = None, scope: Any = None) -> str:
            return body

        def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
            return [("Content-Type", "application/xml")]

    return OperationAborted(body)


def _install_bucket_deletion() -> None:
    """CreateBucket answers 409 OperationAborted for a name deleted in the last few seconds."""
    from moto.s3.models import S3Backend

    original_create, original_delete = S3Backend.create_bucket, S3Backend.delete_bucket
    deleted: dict[str, float] = {}

    def create_bucket(self: Any, bucket_name: str, region_name: str, *args: Any, **kwargs: Any) -> Any:
        gone = deleted.get(bucket_name)
        if gone is not None:
            if time.monotonic() - gone < _rules["bucket_deletion_seconds"]:
                _count("bucket_busy")
                raise _operation_aborted(bucket_name)
            deleted.pop(bucket_name, None)
        return original_create(self, bucket_name, region_name, *args, **kwargs)

    def delete_bucket(self: Any, bucket_name: str) -> Any:
        bucket = original_delete(self, bucket_name)
        if bucket is not None and _rules["bucket_deletion_seconds"] > 0:
            deleted[bucket_name] = time.monotonic()
        return bucket

    S3Backend.create_bucket = create_bucket  # type: ignore[method-assign]
    S3Backend.delete_bucket = delete_bucket  # type: ignore[method-assign]
