"""What the pipeline gave up on: the on-failure queue, parked records, and sending them again.

**On-failure destination.** A stream mapping that exhausts ``MaximumRetryAttempts`` on a batch
(or whose records pass ``MaximumRecordAgeInSeconds``) discards it and sends *metadata only* to
its ``DestinationConfig.OnFailure``, here the SQS queue ``failure_queue_name``: ``requestContext``
(``condition``, ``approximateInvokeCount``, ``functionArn``), ``responseContext``
(``functionError``) and ``KinesisBatchInfo`` -- shard, first and last sequence number, batch size,
stream ARN -- or ``DDBStreamBatchInfo`` for the trend mapping. :func:`failed_batches` reads those
documents (:func:`parse_failure`) without consuming them; :func:`fetch_range` gets the records
back from the stream by their range (``AT_SEQUENCE_NUMBER``, then GetRecords until past the
last sequence number, compared as integers, in a bounded number of calls). Records older than
the stream's retention are gone: the range then says ``expired`` (or ``partial``).

**Parked records.** Valid records whose writes keep failing are parked by the processor in the
raw bucket, ``parked/<shard>/<first seq>.ndjson`` (:func:`helpers.core.layout.parked_key`), one
JSON line per record with its bytes (``data_base64``), partition key, reason and detail, so the
shard can move on; :func:`parked_records` lists them.

**Redrive.** :func:`redrive` puts the records back on the Kinesis stream with their original
bytes and partition key, through the producer's batched PutRecords
(:func:`helpers.notebook.producer.put_raw`, one call per partition key, order kept), and only
once PutRecords accepted a record deletes what held it: the SQS message when its whole range
went back; a parked object, or rewrites it with the lines not accepted. A redriven record is a
**new** Kinesis record (new sequence number, new arrival time): the processor stores items once
per (symbol, timestamp), so a record that had in fact been stored is not stored twice; its raw
line is keyed by the new sequence number, so redrive records that were not stored (parked ones
never are). DynamoDB stream ranges (the trend mapping) are listed but not redriven: their items
are in the table already; re-evaluate them by re-reading the table stream.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from botocore.exceptions import ClientError

from helpers.core.errors import PipelineError, ProducerError
from helpers.core.layout import PARKED_PREFIX
from helpers.notebook import producer
from helpers.notebook.history import missing_as_error
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "MAX_RANGE_CALLS",
    "FailedBatch",
    "ParkedRecord",
    "RedriveReport",
    "failed_batches",
    "failed_records",
    "failure_queue_depth",
    "failure_queue_url",
    "fetch_range",
    "parked_count",
    "parked_frame",
    "parked_records",
    "parse_failure",
    "redrive",
]

log = logging.getLogger(__name__)

RECEIVE_BATCH = 10  # ReceiveMessage / DeleteMessageBatch limit
PEEK_VISIBILITY_SECONDS = 30  # a message read for display is hidden this long, then released at once
REDRIVE_VISIBILITY_SECONDS = 300  # a message being redriven stays hidden while its records are put
MAX_MESSAGES = 1000  # bound of one read of the queue
MAX_GET_RECORDS = 10_000  # GetRecords limit per call (Kinesis); DynamoDB Streams: 1,000
MAX_RANGE_CALLS = 200  # GetRecords calls per range: the loop ends even on an endless stream
BATCH_INFO_KEYS = {"KinesisBatchInfo": "kinesis", "DDBStreamBatchInfo": "dynamodb"}
PREVIEW_CHARS = 120
FAILED_COLUMNS = ("condition", "function_error", "invokes", "source", "shard", "range", "status",
                  "sequence_number", "partition_key", "record")  # fmt: skip
PARKED_COLUMNS = ("reason", "detail", "attempts", "partition_key", "record", "shard", "sequence_number",
                  "arrival", "key")  # fmt: skip


@dataclass(frozen=True)
class FailedBatch:
    """One on-failure document: which records a mapping gave up on, and why."""

    source: str  # "kinesis" or "dynamodb"
    condition: str  # RetryAttemptsExhausted | RecordAgeExceeded
    invoke_count: int
    function_arn: str
    function_error: str | None
    shard_id: str
    start: str  # first sequence number
    end: str  # last sequence number
    batch_size: int
    stream_arn: str
    first_arrival: str
    last_arrival: str
    timestamp: str
    message_id: str | None = None
    receipt_handle: str | None = None

    def contains(self, sequence_number: str) -> bool:
        return int(self.start) <= int(sequence_number) <= int(self.end)

    @property
    def stream_name(self) -> str:
        return self.stream_arn.rsplit("/", 1)[-1] if self.source == "kinesis" else self.stream_arn


def parse_failure(
    document: str | Mapping[str, Any], *, message_id: str | None = None, receipt_handle: str | None = None
) -> FailedBatch:
    """The :class:`FailedBatch` of an on-failure document (JSON text or parsed)."""
    try:
        data = json.loads(document) if isinstance(document, str) else dict(document)
        key = next(k for k in BATCH_INFO_KEYS if k in data)
        info, request = data[key], data["requestContext"]
        return FailedBatch(
            BATCH_INFO_KEYS[key], str(request["condition"]), int(request.get("approximateInvokeCount", 0)),
            str(request.get("functionArn", "")), (data.get("responseContext") or {}).get("functionError"),
            str(info["shardId"]), str(info["startSequenceNumber"]), str(info["endSequenceNumber"]),
            int(info.get("batchSize", 0)), str(info.get("streamArn", "")),
            str(info.get("approximateArrivalOfFirstRecord", "")),
            str(info.get("approximateArrivalOfLastRecord", "")), str(data.get("timestamp", "")),
            message_id, receipt_handle,
        )  # fmt: skip
    except (ValueError, TypeError, KeyError, StopIteration) as err:
        raise PipelineError(
            f"not a Lambda on-failure document ({type(err).__name__}: {err}): expected requestContext "
            "and KinesisBatchInfo or DDBStreamBatchInfo; is this the failure queue?"
        ) from err


# --------------------------------------------------------------------------- the failure queue


def failure_queue_url(settings: Settings | None = None, *, sqs: Any = None) -> str:
    s = settings or load_settings()
    sqs = sqs or aws.client("sqs", s)
    with missing_as_error(f"SQS queue {s.failure_queue_name}", *aws.QUEUE_MISSING_CODES):
        return str(sqs.get_queue_url(QueueName=s.failure_queue_name)["QueueUrl"])


def failure_queue_depth(settings: Settings | None = None, *, sqs: Any = None) -> int:
    """Messages in the failure queue: ApproximateNumberOfMessages + ...NotVisible (in flight)."""
    s = settings or load_settings()
    sqs = sqs or aws.client("sqs", s)
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=failure_queue_url(s, sqs=sqs), AttributeNames=names)
    return sum(int(attributes["Attributes"].get(name, 0)) for name in names)


def _receive(s: Settings, sqs: Any, visibility: int, limit: int) -> list[FailedBatch]:
    url = failure_queue_url(s, sqs=sqs)
    found: dict[str, FailedBatch] = {}
    for _ in range(-(-limit // RECEIVE_BATCH)):  # bounded: at most `limit` messages
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=RECEIVE_BATCH, WaitTimeSeconds=0, VisibilityTimeout=visibility
        ).get("Messages", [])
        for m in messages:
            try:
                found[m["MessageId"]] = parse_failure(
                    m["Body"], message_id=m["MessageId"], receipt_handle=m["ReceiptHandle"]
                )
            except PipelineError as err:
                log.warning("%s: message %s skipped: %s", s.failure_queue_name, m["MessageId"], err)
        if not messages:
            break
    return list(found.values())


def _release(s: Settings, sqs: Any, batches: Iterable[FailedBatch]) -> None:
    """Make received messages visible again now (VisibilityTimeout 0): they stay in the queue."""
    entries = [
        {"Id": str(i), "ReceiptHandle": b.receipt_handle, "VisibilityTimeout": 0}
        for i, b in enumerate(batches)
        if b.receipt_handle
    ]
    url = failure_queue_url(s, sqs=sqs)
    for start in range(0, len(entries), RECEIVE_BATCH):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries[start : start + RECEIVE_BATCH])


def failed_batches(
    settings: Settings | None = None, *, limit: int = MAX_MESSAGES, sqs: Any = None
) -> list[FailedBatch]:
    """The failure queue's documents, oldest range first; the messages stay in the queue."""
    s = settings or load_settings()
    sqs = sqs or aws.client("sqs", s)
    batches = _receive(s, sqs, PEEK_VISIBILITY_SECONDS, limit)
    _release(s, sqs, batches)
    return sorted(batches, key=lambda b: (b.source, b.shard_id, int(b.start)))


# --------------------------------------------------------------------------- the records of a range


def fetch_range(
    batch: FailedBatch,
    settings: Settings | None = None,
    *,
    kinesis: Any = None,
    max_calls: int = MAX_RANGE_CALLS,
) -> tuple[list[dict[str, Any]], str]:
    """The Kinesis records of ``batch``'s range, and ``complete`` | ``partial`` | ``expired``.

    Records are ``{sequence_number, partition_key, data, arrival}``. ``partial``: fewer than
    ``batchSize`` came back (the start trimmed, or ``max_calls`` reached); ``expired``: none.
    DynamoDB stream ranges are not fetched (``"dynamodb stream"``): their items are in the table.
    """
    if batch.source != "kinesis":
        return [], "dynamodb stream"
    s = settings or load_settings()
    kinesis = kinesis or aws.client("kinesis", s)
    try:
        iterator = kinesis.get_shard_iterator(
            StreamName=batch.stream_name, ShardId=batch.shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=batch.start,
        )["ShardIterator"]  # fmt: skip
    except ClientError as err:  # trimmed away, or the stream/shard is gone
        log.warning("range %s..%s of %s: %s", batch.start, batch.end, batch.shard_id, err)
        return [], "expired"
    first, last = int(batch.start), int(batch.end)
    found: list[dict[str, Any]] = []
    for _ in range(max_calls):
        page = kinesis.get_records(ShardIterator=iterator, Limit=MAX_GET_RECORDS)
        records = page.get("Records", [])
        for r in records:
            if first <= int(r["SequenceNumber"]) <= last:
                at = r.get("ApproximateArrivalTimestamp")
                found.append({"sequence_number": str(r["SequenceNumber"]), "partition_key": r["PartitionKey"],
                              "data": bytes(r["Data"]), "arrival": at and at.isoformat()})  # fmt: skip
        past = any(int(r["SequenceNumber"]) >= last for r in records)
        iterator = page.get("NextShardIterator")
        at_tip = not records and page.get("MillisBehindLatest", 0) == 0
        if past or not iterator or at_tip or len(found) >= batch.batch_size:
            break
    status = "expired" if not found else "complete" if len(found) >= batch.batch_size else "partial"
    return found, status


def failed_records(
    settings: Settings | None = None, batches: Iterable[FailedBatch] | None = None, *, limit: int = 100
) -> pd.DataFrame:
    """The failed ranges' records with their reason, as a DataFrame (at most ``limit`` rows)."""
    s = settings or load_settings()
    rows: list[dict[str, Any]] = []
    for b in failed_batches(s) if batches is None else batches:
        records, status = fetch_range(b, s)
        reason = dict(
            condition=b.condition,
            function_error=b.function_error,
            invokes=b.invoke_count,
            source=b.source,
            shard=b.shard_id,
            range=f"{b.start}..{b.end}",
            status=status,
        )
        rows.extend({**reason, "sequence_number": r["sequence_number"], "partition_key": r["partition_key"],
                     "record": repr(r["data"])[:PREVIEW_CHARS]} for r in records)  # fmt: skip
        if not records:
            rows.append(reason)
    return pd.DataFrame(rows[:limit], columns=FAILED_COLUMNS)


# --------------------------------------------------------------------------- parked records


@dataclass(frozen=True)
class ParkedRecord:
    key: str  # the parked object holding it
    line: str  # its NDJSON line, as stored
    reason: str
    detail: str
    sequence_number: str
    partition_key: str
    shard: str
    data: bytes
    arrival: str
    attempts: int


def _parked_objects(s: Settings, s3: Any) -> dict[str, list[ParkedRecord]]:
    found: dict[str, list[ParkedRecord]] = {}
    with missing_as_error(f"S3 bucket {s.raw_bucket}", *aws.BUCKET_MISSING_CODES):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s.raw_bucket, Prefix=PARKED_PREFIX):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=s.raw_bucket, Key=obj["Key"])["Body"].read().decode()
                found[obj["Key"]] = [_parked(obj["Key"], line) for line in body.splitlines() if line.strip()]
    return found


def _parked(key: str, line: str) -> ParkedRecord:
    e = json.loads(line)
    return ParkedRecord(
        key,
        line,
        str(e.get("reason", "")),
        str(e.get("detail", "")),
        str(e["sequence_number"]),
        str(e["partition_key"]),
        str(e.get("shard", "")),
        base64.b64decode(e["data_base64"]),
        str(e.get("arrival", "")),
        int(e.get("attempts", 0)),
    )


def parked_records(settings: Settings | None = None, *, s3: Any = None) -> list[ParkedRecord]:
    """Every parked record, by shard and sequence number."""
    s = settings or load_settings()
    records = [r for rs in _parked_objects(s, s3 or aws.client("s3", s)).values() for r in rs]
    return sorted(records, key=lambda r: (r.shard, int(r.sequence_number)))


def parked_count(settings: Settings | None = None, *, s3: Any = None) -> int:
    """Parked lines in the raw bucket."""
    return len(parked_records(settings, s3=s3))


def parked_frame(settings: Settings | None = None, *, limit: int = 100, s3: Any = None) -> pd.DataFrame:
    """Parked records as a DataFrame: reason, detail, attempts, the record (``repr``), position, key."""
    rows = [{**r.__dict__, "record": repr(r.data)[:PREVIEW_CHARS]} for r in parked_records(settings, s3=s3)]
    return pd.DataFrame(rows[:limit], columns=PARKED_COLUMNS)


# --------------------------------------------------------------------------- redrive


@dataclass
class RedriveReport:
    """What one :func:`redrive` sent back and cleared, and what it left."""

    records_sent: int = 0
    messages_deleted: int = 0
    parked_objects_deleted: int = 0
    parked_objects_rewritten: int = 0
    left: dict[str, int] = field(default_factory=dict)  # why -> units (messages / parked lines) left
    new_records: list[tuple[str, str]] = field(default_factory=list)  # (shard, sequence number) of each

    def keep(self, why: str, count: int = 1) -> None:
        self.left[why] = self.left.get(why, 0) + count


class _Accepted:
    """A Kinesis client wrapper that remembers which entries PutRecords accepted, for deletion."""

    def __init__(self, kinesis: Any) -> None:
        self._kinesis = kinesis
        self.entries: Counter[tuple[bytes, str]] = Counter()
        self.new_records: list[tuple[str, str]] = []

    def put_records(self, **request: Any) -> Any:
        response = self._kinesis.put_records(**request)
        for entry, result in zip(request["Records"], response["Records"], strict=True):
            if not result.get("ErrorCode"):
                self.entries[(bytes(entry["Data"]), str(entry["PartitionKey"]))] += 1
                self.new_records.append((str(result.get("ShardId", "")), str(result["SequenceNumber"])))
        return response

    def take(self, data: bytes, key: str) -> bool:
        """True (once per acceptance) if this entry was accepted."""
        if self.entries[(data, key)] > 0:
            self.entries[(data, key)] -= 1
            return True
        return False


def _put(s: Settings, kinesis: _Accepted, entries: list[tuple[bytes, str]]) -> list[bool]:
    """Put ``entries`` (one PutRecords series per partition key, in order); which were accepted."""
    by_key: dict[str, list[bytes]] = defaultdict(list)
    for data, key in entries:
        by_key[key].append(data)
    for key, records in by_key.items():
        try:
            producer.put_raw(records, s, partition_key=key, kinesis=kinesis)
        except ProducerError as err:
            log.warning("redrive of %d record(s) of %s incomplete: %s", len(records), key, err)
    return [kinesis.take(data, key) for data, key in entries]


def redrive(
    settings: Settings | None = None,
    *,
    failures: bool = True,
    parked: bool = True,
    limit: int = MAX_MESSAGES,
    kinesis: Any = None,
    sqs: Any = None,
    s3: Any = None,
) -> RedriveReport:
    """Put failed ranges (``failures``) and parked records (``parked``) back on the stream.

    See the module docstring: nothing is deleted before PutRecords accepted its records; what
    could not go back stays, counted in ``left`` by reason.
    """
    s = settings or load_settings()
    sqs, s3 = sqs or aws.client("sqs", s), s3 or aws.client("s3", s)
    put = _Accepted(kinesis or aws.client("kinesis", s))
    report = RedriveReport()
    if failures:
        _redrive_failures(s, sqs, put, report, limit)
    if parked:
        _redrive_parked(s, s3, put, report)
    report.records_sent, report.new_records = len(put.new_records), put.new_records
    log.info("redrive: %s", report)
    return report


def _redrive_failures(s: Settings, sqs: Any, put: _Accepted, report: RedriveReport, limit: int) -> None:
    url, release = failure_queue_url(s, sqs=sqs), []
    for batch in _receive(s, sqs, REDRIVE_VISIBILITY_SECONDS, limit):
        records, status = fetch_range(batch, s) if batch.source == "kinesis" else ([], "dynamodb stream")
        if status != "complete":  # expired, partial or not a Kinesis range: the document stays
            report.keep(f"{status} range", 1)
            release.append(batch)
            continue
        if all(_put(s, put, [(r["data"], r["partition_key"]) for r in records])):
            sqs.delete_message(QueueUrl=url, ReceiptHandle=batch.receipt_handle)
            report.messages_deleted += 1
        else:
            report.keep("not accepted by PutRecords", 1)
            release.append(batch)
    _release(s, sqs, release)


def _redrive_parked(s: Settings, s3: Any, put: _Accepted, report: RedriveReport) -> None:
    # In stream order, whatever the keys' text order (moto's short sequence numbers do not sort as
    # text): a symbol's bars go back in the order they came, which its crossovers depend on.
    objects = sorted(
        ((key, records) for key, records in _parked_objects(s, s3).items() if records),
        key=lambda kv: (kv[1][0].shard, int(kv[1][0].sequence_number)),
    )
    for key, records in objects:
        records = sorted(records, key=lambda r: int(r.sequence_number))
        accepted = _put(s, put, [(r.data, r.partition_key) for r in records])
        rest = [r.line for r, ok in zip(records, accepted, strict=True) if not ok]
        if not rest:
            s3.delete_object(Bucket=s.raw_bucket, Key=key)
            report.parked_objects_deleted += 1
        elif len(rest) < len(records):
            s3.put_object(Bucket=s.raw_bucket, Key=key, Body=("\n".join(rest) + "\n").encode())
            report.parked_objects_rewritten += 1
        if rest:
            report.keep("parked, not accepted by PutRecords", len(rest))
