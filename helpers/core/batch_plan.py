"""The processor's batch planning rules, pure: what one Kinesis batch becomes, and what is committed.

Standard library only; :mod:`helpers.pipeline.processor` does the I/O around these functions.

1. :func:`decode` turns each quote of a Lambda record (one, or each of an aggregate's) into a
   :class:`Record`: shard, sequence number, arrival time and the parsed
   :class:`~helpers.core.quotes.Quote` or its :class:`~helpers.core.quotes.Rejected` reason
   (``bad_base64`` when the envelope itself is broken).
   :func:`plan_batch` drops the records the shard's :class:`~helpers.core.checkpoint.Checkpoint`
   says are committed (a redelivery) and sets aside those to park (failed too often); why this
   makes the archive exactly once is the argument in :mod:`helpers.core.checkpoint`.
2. :func:`plan_items` builds one DynamoDB item per (symbol, timestamp) -- the record with the highest
   sequence number wins -- and remembers which records each item covers. Serialising to DynamoDB's
   wire format is the caller's (boto3's ``TypeSerializer``); a quote it refuses is quarantined as
   ``invalid_field``.
3. :func:`group_objects` groups records into raw objects per (shard, symbol, quote year) and
   quarantine objects per (shard, arrival date), keyed by :mod:`helpers.core.layout` after the
   group's first record above the mark (parked ones included: the key must not depend on which
   records are parked); :func:`park_objects` holds the parked ones, one object per shard.
4. After the writes, :func:`cutoffs` gives per shard the lowest failed sequence number X. Lambda
   resumes the shard at X and re-sends every record >= X, so only records < X are committed:
   :func:`manifest` lists exactly those (or says to delete the manifest when none is), and
   :func:`trim_plan` cuts every written object back to them (same key; an object holding only
   records >= X is deleted). The retry then adds the rest under keys >= X: no duplicate.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from helpers.core import layout
from helpers.core.checkpoint import PARK_AFTER, Checkpoint, parked_line
from helpers.core.quotes import Quote, Rejected, derive, format_timestamp, parse_record, to_decimal

__all__ = [
    "ENVELOPE_REASONS",
    "RS",
    "BatchPlan",
    "ItemKey",
    "Record",
    "StoreObject",
    "TrimAction",
    "aggregate",
    "batch_item_failures",
    "chunks",
    "committed",
    "committed_partitions",
    "cutoffs",
    "decode",
    "decode_event",
    "group_objects",
    "item_key",
    "manifest",
    "park_objects",
    "plan_batch",
    "plan_items",
    "processed_item",
    "quarantine_line",
    "records_by_shard",
    "series_by_symbol",
    "split",
    "summary",
    "trim_plan",
    "uncommit_shard",
]

ENVELOPE_REASONS = ("bad_base64",)  # quarantine reasons found before parse_record
RS = b"\x1e"  # RFC 7464 record separator: starts each quote of an aggregated Kinesis record

ItemKey = tuple[str, str]
"""``(symbol, timestamp)``: the key of a processed item."""
Serializer = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a :func:`processed_item` into DynamoDB attribute values; raises if it cannot be stored."""


@dataclass(frozen=True)
class Record:
    """One Kinesis record of the batch, decoded."""

    index: int  # position in the event
    shard: str
    seq: str
    order: int  # the sequence number as an int (moto's are short integers); -1 if not a number
    partition_key: str
    data: bytes
    arrival: str  # canonical approximate arrival time
    parsed: Quote | Rejected
    arrival_epoch: float = 0.0  # approximateArrivalTimestamp as sent (0.0 when absent)
    part: int = 0  # position of this quote in its Kinesis record (an aggregate holds several)
    parts: int = 1  # quotes in its Kinesis record

    @property
    def ident(self) -> str:
        """The quote's identity on its shard: the sequence number, ``<seq>:<part>`` inside an aggregate."""
        return self.seq if self.parts == 1 else f"{self.seq}:{self.part}"


@dataclass
class StoreObject:
    """One S3 object to write: its key, kind (``raw`` or ``quarantine``), records and their lines."""

    key: str
    kind: str  # raw | quarantine | parked
    shard: str
    anchor: str = ""  # sequence number of the record it is named after
    records: list[Record] = field(default_factory=list)  # empty: only parked records had this key
    lines: list[bytes] = field(default_factory=list)
    written: bool = False

    def body(self, cutoff: int | None = None) -> bytes:
        """NDJSON body: every line, or only those of records below ``cutoff``."""
        kept = [
            line
            for r, line in zip(self.records, self.lines, strict=True)
            if cutoff is None or r.order < cutoff
        ]
        return b"".join(line + b"\n" for line in kept)


@dataclass(frozen=True)
class TrimAction:
    """Cut a written object back to its records below ``cutoff``; ``delete`` if none is left."""

    obj: StoreObject
    cutoff: int
    delete: bool


@dataclass
class BatchPlan:
    """What a batch is made of before any write."""

    records: list[Record]  # above the mark, decoded, quotes DynamoDB refused turned into rejections
    items: list[dict[str, Any]]  # serialized DynamoDB items, one per (symbol, timestamp)
    covers: dict[ItemKey, list[Record]]  # item key -> the records it stores
    objects: list[StoreObject]  # raw and quarantine objects
    redelivered: list[Record] = field(default_factory=list)  # at or below the mark: skipped
    parked: dict[int, str] = field(default_factory=dict)  # record index -> why it is parked


# --------------------------------------------------------------------------- records


def aggregate(parts: Iterable[bytes]) -> bytes:
    """Several quotes' bytes as one record's data: a JSON text sequence (what :func:`split` undoes)."""
    return b"".join(RS + part + b"\n" for part in parts)


def split(data: bytes) -> list[bytes]:
    """The quotes' bytes in one record's data: an aggregate's parts, else the data itself."""
    return [part.removesuffix(b"\n") for part in data.split(RS)[1:]] if data.startswith(RS) else [data]


def decode(index: int, raw: Mapping[str, Any], fallback_arrival: str) -> list[Record]:
    """The quotes of one record of a Kinesis Lambda event; never raises (bad data is :class:`Rejected`).

    A record's data is one quote, or an **aggregate**: a JSON text sequence (RFC 7464: each quote
    preceded by the record separator ``0x1E`` and followed by a newline), in which the producer
    packs a symbol's consecutive quotes (:mod:`helpers.notebook.producer`). Each quote of an
    aggregate becomes a :class:`Record` of its own, numbered from ``index``, sharing the Kinesis
    record's shard and sequence number -- it is committed, retried and parked with its Kinesis
    record. Data not starting with ``0x1E`` is one record, newlines or not.
    """
    kinesis = raw.get("kinesis") or {}
    seq = str(kinesis.get("sequenceNumber", ""))
    shard = str(raw.get("eventID", "")).split(":", 1)[0] or "shardId-unknown"
    arrival = fallback_arrival
    stamp = kinesis.get("approximateArrivalTimestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        arrival = format_timestamp(datetime.fromtimestamp(float(stamp), UTC))
    order = int(seq) if seq.isdigit() else -1
    epoch = float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else 0.0
    key = str(kinesis.get("partitionKey", ""))
    try:
        data = base64.b64decode(kinesis.get("data") or "", validate=True)
    except (binascii.Error, ValueError, TypeError) as err:
        bad = str(kinesis.get("data", "")).encode("utf-8", "replace")
        rejected = Rejected("bad_base64", f"record data is not base64: {err}")
        return [Record(index, shard, seq, order, key, bad, arrival, rejected, epoch)]
    lines = split(data)
    return [
        Record(index + n, shard, seq, order, key, line, arrival, parse_record(line), epoch, n, len(lines))
        for n, line in enumerate(lines)
    ]


def processed_item(quote: Quote, processed_at: str) -> dict[str, Any]:
    """The DynamoDB item of a quote: its fields, ``change``/``change_pct`` and ``processed_at``; Decimals."""
    item: dict[str, Any] = {
        k: (to_decimal(v) if isinstance(v, float) else v) for k, v in quote.to_dict().items() if v is not None
    }
    item.update({k: to_decimal(v) for k, v in derive(quote).items()})
    item["processed_at"] = processed_at
    return item


def quarantine_line(r: Record) -> bytes:
    """The quarantine NDJSON line of a rejected record: reason, detail, where it came from, its bytes."""
    assert isinstance(r.parsed, Rejected)
    return json.dumps(
        {
            "reason": r.parsed.reason,
            "detail": r.parsed.detail,
            "sequence_number": r.seq,
            **({"part": r.part} if r.parts > 1 else {}),
            "partition_key": r.partition_key,
            "shard": r.shard,
            "data_base64": base64.b64encode(r.data).decode("ascii"),
            "arrival": r.arrival,
        },
        separators=(",", ":"),
    ).encode("utf-8")


def group_objects(
    records: Iterable[Record],
    *,
    exclude: Collection[int] = frozenset(),
    raw_prefix: str = layout.RAW_PREFIX,
    quarantine_prefix: str = layout.QUARANTINE_PREFIX,
) -> list[StoreObject]:
    """Group records into raw (shard, symbol, year) and quarantine (shard, arrival dt) objects.

    The raw group is the quote's :func:`~helpers.core.layout.raw_partition`, a function of the
    record alone, so every attempt between commits forms the same groups and names them alike.

    Records go in (shard, sequence number) order; an object is named by its first record, an
    ``exclude``-d (parked) one included, and holds the others' lines.
    """
    groups: dict[tuple[str, ...], StoreObject] = {}
    for r in sorted(records, key=lambda r: (r.shard, r.order, r.index)):
        if isinstance(r.parsed, Quote):
            symbol, year = layout.raw_partition(r.parsed.symbol, r.parsed.timestamp)
            group: tuple[str, ...] = ("raw", r.shard, symbol, year)
            if group not in groups:
                key = layout.raw_key(symbol, year, r.shard, r.seq, prefix=raw_prefix)
                groups[group] = StoreObject(key, "raw", r.shard, r.seq)
        else:
            dt = r.arrival[:10]
            group = ("quarantine", r.shard, dt)
            if group not in groups:
                key = layout.quarantine_key(dt, r.shard, r.seq, prefix=quarantine_prefix)
                groups[group] = StoreObject(key, "quarantine", r.shard, r.seq)
        if r.index in exclude:
            continue
        groups[group].records.append(r)
        groups[group].lines.append(r.parsed.to_json() if isinstance(r.parsed, Quote) else quarantine_line(r))
    return list(groups.values())


def park_objects(
    records: Iterable[Record], parked: Mapping[int, str], attempts: Mapping[int, int]
) -> list[StoreObject]:
    """One ``parked/`` object per shard holding its parked records, named by the shard's first record.

    ``records`` are the batch's records above the mark; ``parked`` maps the parked ones' indexes
    to why, ``attempts`` to how many times their writes failed.
    """
    objects: dict[str, StoreObject] = {}
    for r in sorted(records, key=lambda r: (r.shard, r.order, r.index)):
        if r.shard not in objects:
            objects[r.shard] = StoreObject(layout.parked_key(r.shard, r.seq), "parked", r.shard, r.seq)
        if r.index in parked:
            line = parked_line(
                seq=r.seq,
                partition_key=r.partition_key,
                shard=r.shard,
                data=r.data,
                arrival=r.arrival,
                detail=parked[r.index],
                attempts=attempts.get(r.index, 0),
            )
            objects[r.shard].records.append(r)
            objects[r.shard].lines.append(line)
    return [obj for obj in objects.values() if obj.records]


# --------------------------------------------------------------------------- items


def item_key(item: Mapping[str, Any]) -> ItemKey:
    """``(symbol, timestamp)`` of a serialized item."""
    return item["symbol"]["S"], item["timestamp"]["S"]


def plan_items(
    records: Iterable[Record], processed_at: str, serialize: Serializer
) -> tuple[list[Record], list[dict[str, Any]], dict[ItemKey, list[Record]]]:
    """Serialized items, one per (symbol, timestamp) -- the last record wins -- and who they cover.

    Returns the records in sequence order, a quote ``serialize`` refuses turned into a quarantined
    record (``invalid_field``), the items and, per item key, the records it stores.
    """
    items: dict[ItemKey, dict[str, Any]] = {}
    covers: dict[ItemKey, list[Record]] = {}
    out: list[Record] = []
    for r in sorted(records, key=lambda r: (r.order, r.index)):
        quote = r.parsed
        if isinstance(quote, Quote):
            try:
                item = serialize(processed_item(quote, processed_at))
            except Exception as err:  # e.g. a number outside DynamoDB's range
                r = replace(r, parsed=Rejected("invalid_field", f"cannot be stored in DynamoDB: {err}"))
            else:
                items[(quote.symbol, quote.timestamp)] = item
                covers.setdefault((quote.symbol, quote.timestamp), []).append(r)
        out.append(r)
    return out, list(items.values()), covers


def series_by_symbol(items: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Items grouped per symbol, each group in timestamp order (the order they must be written in)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in sorted(items, key=item_key):
        groups.setdefault(item["symbol"]["S"], []).append(item)
    return list(groups.values())


def chunks(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """``items`` cut into consecutive chunks of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def decode_event(event: Mapping[str, Any], processed_at: str) -> list[Record]:
    """Every quote of a Kinesis Lambda event, decoded (:func:`decode`), indexed 0, 1, 2 ..."""
    decoded: list[Record] = []
    for raw in event.get("Records") or []:
        decoded.extend(decode(len(decoded), raw, processed_at))
    return decoded


def plan_batch(
    event: Mapping[str, Any] | list[Record],
    processed_at: str,
    serialize: Serializer,
    *,
    checkpoints: Mapping[str, Checkpoint] | None = None,
    raw_prefix: str = layout.RAW_PREFIX,
    quarantine_prefix: str = layout.QUARANTINE_PREFIX,
) -> BatchPlan:
    """Everything a Kinesis event is to be written as: records above the marks, items, objects.

    ``checkpoints`` (shard -> :class:`Checkpoint`, missing: nothing committed yet) decide what
    is a redelivery and what is parked before any write (failed :data:`PARK_AFTER` times).
    """
    decoded = event if isinstance(event, list) else decode_event(event, processed_at)
    marks = checkpoints or {}
    fresh: list[Record] = []
    redelivered: list[Record] = []
    for r in decoded:
        mark = marks.get(r.shard)
        (redelivered if mark is not None and mark.done(r) else fresh).append(r)
    parked: dict[int, str] = {}
    for r in fresh:
        mark = marks.get(r.shard)
        if mark is not None and mark.attempts(r.seq) >= PARK_AFTER:
            parked[r.index] = f"failed {mark.attempts(r.seq)} times, last: {mark.failing[r.seq].error}"
    writable, items, covers = plan_items((r for r in fresh if r.index not in parked), processed_at, serialize)
    records = sorted(writable + [r for r in fresh if r.index in parked], key=lambda r: (r.order, r.index))
    objects = group_objects(
        records, exclude=parked, raw_prefix=raw_prefix, quarantine_prefix=quarantine_prefix
    )
    return BatchPlan(records, items, covers, objects, redelivered, parked)


# --------------------------------------------------------------------------- commit


def cutoffs(records: Iterable[Record], failed: set[int]) -> dict[str, int]:
    """Per shard, the lowest failed sequence number (records at or above it are not committed)."""
    found: dict[str, int] = {}
    for r in records:
        if r.index in failed:
            found[r.shard] = min(found.get(r.shard, r.order), r.order)
    return found


def committed(r: Record, cutoffs: Mapping[str, int]) -> bool:
    """True if ``r`` is below its shard's cutoff (or its shard has none)."""
    return r.shard not in cutoffs or r.order < cutoffs[r.shard]


def records_by_shard(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records per shard, in sequence order."""
    by_shard: dict[str, list[Record]] = {}
    for r in sorted(records, key=lambda r: (r.order, r.index)):
        by_shard.setdefault(r.shard, []).append(r)
    return by_shard


def uncommit_shard(records: Iterable[Record], shard: str) -> tuple[set[int], int]:
    """A shard whose manifest could not be written: (every record index of it, its new cutoff).

    The manifest is the commit: without it the whole shard's part of the batch is retried.
    """
    rows = [r for r in records if r.shard == shard]
    return {r.index for r in rows}, min(r.order for r in rows)


def manifest(
    shard: str, rows: list[Record], cutoffs: Mapping[str, int], parked: Mapping[int, str] | None = None
) -> tuple[str, dict[str, Any] | None]:
    """The manifest key of one shard's records (in sequence order) and its body; ``None``: delete it."""
    key = layout.manifest_key(shard, rows[0].seq)
    kept = [r for r in rows if committed(r, cutoffs)]
    if not kept:
        return key, None
    parked = parked or {}
    return key, {
        "shard": shard,
        "first_sequence_number": rows[0].seq,
        "last_committed_sequence_number": kept[-1].seq,
        "accepted": [r.ident for r in kept if isinstance(r.parsed, Quote) and r.index not in parked],
        "quarantined": {
            r.ident: r.parsed.reason for r in kept if isinstance(r.parsed, Rejected) and r.index not in parked
        },
        "parked": {r.ident: parked[r.index] for r in kept if r.index in parked},
    }


def trim_plan(objects: Iterable[StoreObject], cutoffs: Mapping[str, int]) -> list[TrimAction]:
    """The objects holding records at or above their shard's cutoff, and whether to delete them."""
    actions = []
    for obj in objects:
        cutoff = cutoffs.get(obj.shard)
        if cutoff is not None and obj.records and obj.records[-1].order >= cutoff:
            actions.append(TrimAction(obj, cutoff, delete=obj.records[0].order >= cutoff))
    return actions


def committed_partitions(objects: Iterable[StoreObject], deleted: set[str]) -> set[layout.Partition]:
    """The ``(symbol, year)`` partitions of raw objects written and not deleted."""
    found = set()
    for obj in objects:
        if obj.kind == "raw" and obj.written and obj.key not in deleted:
            q = obj.records[0].parsed
            assert isinstance(q, Quote)
            found.add(layout.raw_partition(q.symbol, q.timestamp))
    return found


def batch_item_failures(records: Iterable[Record], failed: set[int]) -> list[dict[str, str]]:
    """The ``batchItemFailures`` of the failed record indexes, in sequence order."""
    by_index = {r.index: r for r in records}
    seqs = dict.fromkeys(by_index[i].seq for i in sorted(failed, key=lambda i: (by_index[i].order, i)))
    return [{"itemIdentifier": seq} for seq in seqs]  # an aggregate's Kinesis record once


def summary(
    plan: BatchPlan, failed: set[int], cutoffs: Mapping[str, int], deleted: set[str]
) -> dict[str, Any]:
    """The batch's one log line, as a dict (the caller adds the duration)."""
    records = plan.records
    reasons: dict[str, int] = {}
    for r in records:
        if isinstance(r.parsed, Rejected) and r.index not in plan.parked:
            reasons[r.parsed.reason] = reasons.get(r.parsed.reason, 0) + 1
    return {
        "message": "processed batch",
        "records": len(records),
        "accepted": sum(isinstance(r.parsed, Quote) and r.index not in plan.parked for r in records),
        "quarantined": reasons,
        "parked": len(plan.parked),
        "redelivered": len(plan.redelivered),
        "failed": len(failed),
        "committed": sum(committed(r, cutoffs) for r in records),
        "raw_objects": sum(o.kind == "raw" for o in plan.objects),
        "quarantine_objects": sum(o.kind == "quarantine" for o in plan.objects),
        "dynamodb_items": len(plan.items),
        "deleted_objects": len(deleted),
        "shards": sorted({r.shard for r in records}),
        "first_sequence_number": min((r.seq for r in records), key=lambda q: (len(q), q), default=None),
    }
