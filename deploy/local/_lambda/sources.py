"""Reading Kinesis and DynamoDB Streams shards from moto's in-process state, as Lambda events.

moto keeps a Kinesis shard's records in an ordered dict keyed by short integer sequence numbers
(1, 2, 3... per shard) and a DynamoDB stream's records in a list whose sequence numbers count up
from a fixed start; both only grow. Positions are therefore plain ints: "after sequence number
N". Reads take no locks: they only look up keys and slice lists, which the GIL keeps atomic
against moto's request threads appending records.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

KINESIS_SCHEMA_VERSION = "1.0"
DYNAMODB_EVENT_VERSION = "1.1"
RECORD_OVERHEAD_BYTES = 400  # envelope of one event record, for the 6 MB payload limit


@dataclass(frozen=True)
class SourceRecord:
    """One stream record: its position, arrival time and Lambda event record."""

    seq: int
    arrival: float  # epoch seconds
    event: dict[str, Any]
    size: int


class StreamSource(Protocol):
    kind: str
    arn: str

    def shard_ids(self) -> list[str] | None: ...

    def generation(self) -> Any: ...

    def read(self, shard_id: str, after: int, limit: int) -> list[SourceRecord]: ...

    def trim_horizon(self, shard_id: str) -> int: ...

    def latest(self, shard_id: str) -> int: ...

    def at_timestamp(self, shard_id: str, timestamp: float) -> int: ...


def _backend(service: str, account: str, region: str) -> Any:
    from moto.backends import get_backend

    return get_backend(service)[account][region]  # type: ignore[call-overload]


class _ArnSource:
    """A source named by its ARN: ``arn:aws:<service>:<region>:<account>:<resource>``."""

    def __init__(self, arn: str) -> None:
        self.arn = arn
        _, _, _, self.region, self.account, self.resource = arn.split(":", 5)


class KinesisSource(_ArnSource):
    """A Kinesis data stream of the local stack, by ARN."""

    kind = "kinesis"

    def __init__(self, arn: str) -> None:
        super().__init__(arn)
        self.name = arn.split("/", 1)[1]

    def _stream(self) -> Any:
        stream = _backend("kinesis", self.account, self.region).streams.get(self.name)
        return stream if stream is not None and stream.arn == self.arn else None

    def _shard(self, shard_id: str) -> Any:
        stream = self._stream()
        return stream.shards.get(shard_id) if stream is not None else None

    def shard_ids(self) -> list[str] | None:
        stream = self._stream()
        return None if stream is None else sorted(stream.shards)

    def generation(self) -> Any:
        """Changes when the stream is deleted and created again under the same name (same ARN)."""
        stream = self._stream()
        return None if stream is None else stream.creation_datetime

    def trim_horizon(self, shard_id: str) -> int:
        return 0

    def latest(self, shard_id: str) -> int:
        shard = self._shard(shard_id)
        return int(shard.get_max_sequence_number()) if shard is not None else 0

    def at_timestamp(self, shard_id: str, timestamp: float) -> int:
        shard = self._shard(shard_id)
        if shard is None:
            return 0
        before = [seq for seq, rec in list(shard.records.items()) if rec.created_at < timestamp]
        return max(before, default=0)

    def read(self, shard_id: str, after: int, limit: int) -> list[SourceRecord]:
        shard = self._shard(shard_id)
        if shard is None or limit <= 0:
            return []
        records = shard.records
        found: list[Any] = []
        seq = after + 1
        while len(found) < limit:
            record = records.get(seq)
            if record is None:
                break
            found.append(record)
            seq += 1
        if not found and shard.get_max_sequence_number() > after:  # a gap: fall back to a scan
            found = [r for s, r in sorted(list(records.items())) if s > after][:limit]
        encryption = getattr(self._stream(), "encryption_type", "NONE") or "NONE"
        return [self._event(shard_id, r, encryption) for r in found]

    def _event(self, shard_id: str, record: Any, encryption: str) -> SourceRecord:
        data = record.data if isinstance(record.data, str) else base64.b64encode(record.data).decode()
        seq = int(record.sequence_number)
        event: dict[str, Any] = {
            "kinesis": {
                "kinesisSchemaVersion": KINESIS_SCHEMA_VERSION,
                "partitionKey": record.partition_key,
                "sequenceNumber": str(seq),
                "data": data,
                "approximateArrivalTimestamp": round(float(record.created_at), 3),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "",  # the function's role, set by the poller
            "awsRegion": self.region,
            "eventSourceARN": self.arn,
        }
        if encryption != "NONE":
            event["kinesis"]["encryptionType"] = encryption
        size = len(data) + len(record.partition_key) + RECORD_OVERHEAD_BYTES + len(self.arn)
        return SourceRecord(seq, float(record.created_at), event, size)


class DynamoDBStreamSource(_ArnSource):
    """A DynamoDB table's stream of the local stack, by stream ARN (one shard in moto)."""

    kind = "dynamodb"

    def __init__(self, arn: str) -> None:
        super().__init__(arn)
        self.table_name = self.resource.split("/")[1]  # table/<name>/stream/<label>

    def _shard(self) -> Any:
        table = _backend("dynamodb", self.account, self.region).tables.get(self.table_name)
        if table is None or not table.latest_stream_label or table.stream_shard is None:
            return None
        if f"{table.table_arn}/stream/{table.latest_stream_label}" != self.arn:
            return None  # the table was re-created or its stream re-enabled: another stream
        return table.stream_shard

    def shard_ids(self) -> list[str] | None:
        shard = self._shard()
        return None if shard is None else [shard.id]

    def generation(self) -> Any:  # a re-created table or stream has a new stream ARN
        return self.arn

    def trim_horizon(self, shard_id: str) -> int:
        shard = self._shard()
        return int(shard.starting_sequence_number) - 1 if shard is not None else 0

    def latest(self, shard_id: str) -> int:
        shard = self._shard()
        return int(shard.starting_sequence_number) - 1 + len(shard.items) if shard is not None else 0

    def at_timestamp(self, shard_id: str, timestamp: float) -> int:  # not offered by DynamoDB Streams
        return self.trim_horizon(shard_id)

    def read(self, shard_id: str, after: int, limit: int) -> list[SourceRecord]:
        shard = self._shard()
        if shard is None or shard.id != shard_id or limit <= 0:
            return []
        start = max(0, after + 1 - int(shard.starting_sequence_number))
        return [self._event(item.record) for item in shard.items[start : start + limit]]

    def _event(self, record: dict[str, Any]) -> SourceRecord:
        body = dict(record["dynamodb"])
        created = body.get("ApproximateCreationDateTime")
        if isinstance(created, dt.datetime):
            arrival = (created if created.tzinfo else created.replace(tzinfo=dt.UTC)).timestamp()
        else:
            arrival = float(created or 0)
        body["ApproximateCreationDateTime"] = int(arrival)
        event = {
            "eventID": record["eventID"],
            "eventName": record["eventName"],
            "eventVersion": DYNAMODB_EVENT_VERSION,
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,  # moto writes us-east-1 whatever the region
            "dynamodb": body,
            "eventSourceARN": self.arn,
        }
        size = int(body.get("SizeBytes", 0)) + RECORD_OVERHEAD_BYTES + len(self.arn)
        return SourceRecord(int(body["SequenceNumber"]), arrival, event, size)


def source_for(arn: str) -> StreamSource | None:
    """The reader for an event source ARN, or None for sources the runtime does not poll."""
    service = arn.split(":")[2] if arn.count(":") >= 5 else ""
    if service == "kinesis" and ":stream/" in arn and "/consumer/" not in arn:
        return KinesisSource(arn)
    if service == "dynamodb" and "/stream/" in arn:
        return DynamoDBStreamSource(arn)
    return None
