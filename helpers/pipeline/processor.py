"""The processor: one Kinesis batch of quotes -> S3 raw archive, quarantine, DynamoDB, manifest.

Lambda-safe (stdlib + boto3). :func:`process_batch` never raises for bad data: every record is
either stored (raw NDJSON line + processed item), quarantined with its reason, or -- only when
a write to S3 or DynamoDB still fails after retries -- reported in ``batchItemFailures``.

Store layout, all keys derived from the shard and Kinesis sequence numbers (never time or
uuid), so an identical redelivery rewrites the same objects:

* ``raw/symbol=<SYM>/dt=<YYYY-MM-DD>/<shard>-<first seq of the group>.ndjson`` -- one object per
  (batch, partition), one :meth:`Quote.to_json` line per record;
* ``quarantine/dt=<arrival date>/<shard>-<first seq>.ndjson`` -- reason, detail and the record;
* ``manifests/<shard>/<first seq of the batch>.json`` -- the committed sequence numbers,
  accepted and quarantined (with reasons); counting distinct ones measures the pipeline.

Partial failure: Lambda resumes the shard at the lowest failed sequence number X and re-sends
every record >= X. So after the writes, each object is cut back to its records < X (same key;
objects holding only records >= X are deleted) and the manifest lists only records < X: the
stores hold exactly the committed prefix and the retry adds the rest under keys >= X.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from helpers.core.quotes import (
    Quote,
    Rejected,
    derive,
    format_timestamp,
    parse_record,
    to_decimal,
    utc_now_timestamp,
)
from helpers.pipeline import aws
from helpers.pipeline.catalog import register_partitions
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "ENVELOPE_REASONS",
    "MANIFEST_PREFIX",
    "MAX_ITEMS_PER_BATCH_WRITE",
    "MAX_WRITE_ATTEMPTS",
    "manifest_key",
    "process_batch",
    "processed_item",
    "quarantine_key",
    "raw_key",
]

log = logging.getLogger(__name__)

MAX_ITEMS_PER_BATCH_WRITE = 25  # BatchWriteItem limit
MAX_WRITE_ATTEMPTS = 5  # BatchWriteItem calls per item while UnprocessedItems come back
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 1.0
WRITE_THREADS = 8  # parallel S3/DynamoDB requests per invocation
MANIFEST_PREFIX = "manifests/"
ENVELOPE_REASONS = ("bad_base64",)  # quarantine reasons found before parse_record
NDJSON = "application/x-ndjson"

_known_partitions: set[tuple[str, str, str, str]] = set()  # (database, table, symbol, dt), per container
_partitions_lock = threading.Lock()


@dataclass(frozen=True)
class _Record:
    index: int
    shard: str
    seq: str
    order: int  # the sequence number as an int (moto's are short integers)
    partition_key: str
    data: bytes
    arrival: str  # canonical approximate arrival time
    parsed: Quote | Rejected


@dataclass
class _Object:
    key: str
    kind: str  # raw | quarantine
    records: list[_Record] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    written: bool = False

    def body(self, cutoff: int | None = None) -> bytes:
        kept = [
            line
            for r, line in zip(self.records, self.lines, strict=True)
            if cutoff is None or r.order < cutoff
        ]
        return b"".join(line + b"\n" for line in kept)


# --------------------------------------------------------------------------- keys


def raw_key(settings: Settings, symbol: str, dt: str, shard: str, first_seq: str) -> str:
    return f"{settings.raw_prefix}symbol={symbol}/dt={dt}/{shard}-{first_seq}.ndjson"


def quarantine_key(settings: Settings, dt: str, shard: str, first_seq: str) -> str:
    return f"{settings.quarantine_prefix}dt={dt}/{shard}-{first_seq}.ndjson"


def manifest_key(shard: str, first_seq: str) -> str:
    return f"{MANIFEST_PREFIX}{shard}/{first_seq}.json"


# --------------------------------------------------------------------------- records


def _decode(index: int, raw: dict[str, Any], fallback_arrival: str) -> _Record:
    kinesis = raw.get("kinesis") or {}
    seq = str(kinesis.get("sequenceNumber", ""))
    shard = str(raw.get("eventID", "")).split(":", 1)[0] or "shardId-unknown"
    arrival = fallback_arrival
    stamp = kinesis.get("approximateArrivalTimestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        arrival = format_timestamp(datetime.fromtimestamp(float(stamp), UTC))
    parsed: Quote | Rejected
    try:
        data = base64.b64decode(kinesis.get("data") or "", validate=True)
        parsed = parse_record(data)
    except (binascii.Error, ValueError, TypeError) as err:
        data = str(kinesis.get("data", "")).encode("utf-8", "replace")
        parsed = Rejected("bad_base64", f"record data is not base64: {err}")
    order = int(seq) if seq.isdigit() else -1
    return _Record(index, shard, seq, order, str(kinesis.get("partitionKey", "")), data, arrival, parsed)


def processed_item(quote: Quote, processed_at: str) -> dict[str, Any]:
    """The DynamoDB item of a quote: its fields, ``change``/``change_pct`` and ``processed_at``; Decimals."""
    item: dict[str, Any] = {
        k: (to_decimal(v) if isinstance(v, float) else v) for k, v in quote.to_dict().items() if v is not None
    }
    item.update({k: to_decimal(v) for k, v in derive(quote).items()})
    item["processed_at"] = processed_at
    return item


def _quarantine_line(r: _Record) -> bytes:
    assert isinstance(r.parsed, Rejected)
    return json.dumps(
        {
            "reason": r.parsed.reason,
            "detail": r.parsed.detail,
            "sequence_number": r.seq,
            "partition_key": r.partition_key,
            "shard": r.shard,
            "data_base64": base64.b64encode(r.data).decode("ascii"),
            "arrival": r.arrival,
        },
        separators=(",", ":"),
    ).encode("utf-8")


def _objects(records: list[_Record], s: Settings) -> list[_Object]:
    """Group records into raw (shard, symbol, dt) and quarantine (shard, arrival dt) objects."""
    groups: dict[tuple[str, ...], _Object] = {}
    for r in sorted(records, key=lambda r: (r.shard, r.order, r.index)):
        if isinstance(r.parsed, Quote):
            q = r.parsed
            group: tuple[str, ...] = ("raw", r.shard, q.symbol, q.timestamp[:10])
            if group not in groups:
                groups[group] = _Object(raw_key(s, q.symbol, q.timestamp[:10], r.shard, r.seq), "raw")
            line = q.to_json()
        else:
            group = ("quarantine", r.shard, r.arrival[:10])
            if group not in groups:
                groups[group] = _Object(quarantine_key(s, r.arrival[:10], r.shard, r.seq), "quarantine")
            line = _quarantine_line(r)
        groups[group].records.append(r)
        groups[group].lines.append(line)
    return list(groups.values())


# --------------------------------------------------------------------------- writes


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


def _put_object(s3: Any, bucket: str, obj: _Object) -> bool:
    try:
        s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body(), ContentType=NDJSON)
    except Exception:
        log.exception("PutObject s3://%s/%s failed; its %d record(s) fail", bucket, obj.key, len(obj.records))
        return False
    obj.written = True
    return True


def _item_key(item: dict[str, Any]) -> tuple[str, str]:
    return item["symbol"]["S"], item["timestamp"]["S"]


def _write_items(
    dynamodb: Any, table: str, items: list[dict[str, Any]], sleep: Callable[[float], Any]
) -> set[tuple[str, str]]:
    """BatchWriteItem one chunk, retrying UnprocessedItems; returns the keys still not written."""
    pending = items
    for attempt in range(MAX_WRITE_ATTEMPTS):
        if attempt:
            sleep(_backoff(attempt))
        try:
            response = dynamodb.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": item}} for item in pending]}
            )
        except Exception:
            log.exception("BatchWriteItem on %s failed; %d item(s) fail", table, len(pending))
            return {_item_key(item) for item in pending}
        unprocessed = (response.get("UnprocessedItems") or {}).get(table) or []
        if not unprocessed:
            return set()
        pending = [u["PutRequest"]["Item"] for u in unprocessed]
    log.error("BatchWriteItem on %s: %d item(s) still unprocessed after %d attempts",
              table, len(pending), MAX_WRITE_ATTEMPTS)  # fmt: skip
    return {_item_key(item) for item in pending}


def _series_by_symbol(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Items grouped per symbol, each group in timestamp order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in sorted(items, key=_item_key):
        groups.setdefault(item["symbol"]["S"], []).append(item)
    return list(groups.values())


def _write_series(
    dynamodb: Any, table: str, series: list[dict[str, Any]], sleep: Callable[[float], Any]
) -> set[tuple[str, str]]:
    """Write one symbol's items chunk by chunk in timestamp order, stopping at the first failure.

    The trend Lambda reads a symbol's history from the table when a new bar arrives on the
    table's stream, so a later bar must never land while an earlier one of the same batch is
    still in flight or has failed. Symbols are independent and are written in parallel.
    """
    for start in range(0, len(series), MAX_ITEMS_PER_BATCH_WRITE):
        failed = _write_items(dynamodb, table, series[start : start + MAX_ITEMS_PER_BATCH_WRITE], sleep)
        if failed:
            rest = series[start + MAX_ITEMS_PER_BATCH_WRITE :]
            return failed | {_item_key(item) for item in rest}
    return set()


def _items(
    records: list[_Record], processed_at: str
) -> tuple[list[_Record], list[dict[str, Any]], dict[tuple[str, str], list[_Record]]]:
    """Serialized items, one per (symbol, timestamp) -- the last record wins -- and who they cover.

    A quote DynamoDB cannot store is turned into a quarantined record (``invalid_field``).
    """
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    items: dict[tuple[str, str], dict[str, Any]] = {}
    covers: dict[tuple[str, str], list[_Record]] = {}
    out: list[_Record] = []
    for r in sorted(records, key=lambda r: (r.order, r.index)):
        quote = r.parsed
        if isinstance(quote, Quote):
            try:
                item = {k: serializer.serialize(v) for k, v in processed_item(quote, processed_at).items()}
            except Exception as err:  # e.g. a number outside DynamoDB's range
                r = replace(r, parsed=Rejected("invalid_field", f"cannot be stored in DynamoDB: {err}"))
            else:
                items[(quote.symbol, quote.timestamp)] = item
                covers.setdefault((quote.symbol, quote.timestamp), []).append(r)
        out.append(r)
    return out, list(items.values()), covers


# --------------------------------------------------------------------------- the batch


def process_batch(
    event: dict[str, Any],
    settings: Settings | None = None,
    *,
    s3: Any = None,
    dynamodb: Any = None,
    glue: Any = None,
    now: str | None = None,
    register_partitions: bool = True,
    sleep: Callable[[float], Any] = time.sleep,
) -> dict[str, Any]:
    """Process one Kinesis event; returns the partial batch response ``{"batchItemFailures": [...]}``."""
    started = time.perf_counter()
    s = settings or load_settings()
    s3 = s3 or aws.client("s3", s)
    dynamodb = dynamodb or aws.client("dynamodb", s)
    processed_at = now or utc_now_timestamp()
    decoded = [_decode(i, raw, processed_at) for i, raw in enumerate(event.get("Records") or [])]
    records, items, covers = _items(decoded, processed_at)
    objects = _objects(records, s)

    failed: set[int] = set()  # record indexes
    with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="processor") as pool:
        puts = [(obj, pool.submit(_put_object, s3, s.raw_bucket, obj)) for obj in objects]
        writes = [
            pool.submit(_write_series, dynamodb, s.table_name, series, sleep)
            for series in _series_by_symbol(items)
        ]
        for obj, put in puts:
            if not put.result():
                failed.update(r.index for r in obj.records)
        for write in writes:
            for key in write.result():
                failed.update(r.index for r in covers[key])

        cutoffs = _cutoffs(records, failed)
        manifests = _write_manifests(s3, s, records, cutoffs, pool)
        for shard, ok in manifests.items():
            if not ok:  # the manifest is the commit: without it the whole shard batch is retried
                failed.update(r.index for r in records if r.shard == shard)
                cutoffs[shard] = min(r.order for r in records if r.shard == shard)
        trimmed = _trim(s3, s.raw_bucket, objects, cutoffs, pool)

    if register_partitions:
        _register(s, glue, [o for o in objects if o.kind == "raw" and o.written and o.key not in trimmed])
    by_index = {r.index: r for r in records}
    failures = [{"itemIdentifier": by_index[i].seq} for i in sorted(failed, key=lambda i: by_index[i].order)]
    _log_summary(records, objects, items, failed, cutoffs, trimmed, started)
    return {"batchItemFailures": failures}


def _cutoffs(records: list[_Record], failed: set[int]) -> dict[str, int]:
    """Per shard, the lowest failed sequence number (records at or above it are not committed)."""
    cutoffs: dict[str, int] = {}
    for r in records:
        if r.index in failed:
            cutoffs[r.shard] = min(cutoffs.get(r.shard, r.order), r.order)
    return cutoffs


def _committed(r: _Record, cutoffs: dict[str, int]) -> bool:
    return r.shard not in cutoffs or r.order < cutoffs[r.shard]


def _write_manifests(
    s3: Any, s: Settings, records: list[_Record], cutoffs: dict[str, int], pool: ThreadPoolExecutor
) -> dict[str, bool]:
    """Write (or, when nothing is committed, delete) one manifest per shard; shard -> success."""
    by_shard: dict[str, list[_Record]] = {}
    for r in sorted(records, key=lambda r: (r.order, r.index)):
        by_shard.setdefault(r.shard, []).append(r)

    def write(shard: str, rows: list[_Record]) -> bool:
        key = manifest_key(shard, rows[0].seq)
        committed = [r for r in rows if _committed(r, cutoffs)]
        try:
            if not committed:
                s3.delete_object(Bucket=s.raw_bucket, Key=key)
                return True
            body = {
                "shard": shard,
                "first_sequence_number": rows[0].seq,
                "last_committed_sequence_number": committed[-1].seq,
                "accepted": [r.seq for r in committed if isinstance(r.parsed, Quote)],
                "quarantined": {r.seq: r.parsed.reason for r in committed if isinstance(r.parsed, Rejected)},
            }
            s3.put_object(
                Bucket=s.raw_bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json"
            )
            return True
        except Exception:
            log.exception("manifest s3://%s/%s could not be written; the batch is retried", s.raw_bucket, key)
            return False

    futures = {shard: pool.submit(write, shard, rows) for shard, rows in by_shard.items()}
    return {shard: f.result() for shard, f in futures.items()}


def _trim(
    s3: Any, bucket: str, objects: list[_Object], cutoffs: dict[str, int], pool: ThreadPoolExecutor
) -> set[str]:
    """Cut written objects back to their committed records; returns the keys deleted."""

    def cut(obj: _Object, cutoff: int) -> str | None:
        try:
            if obj.records[0].order >= cutoff:
                s3.delete_object(Bucket=bucket, Key=obj.key)
                return obj.key
            s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body(cutoff), ContentType=NDJSON)
        except Exception:
            log.exception("could not cut s3://%s/%s back to records below %d; a retry may duplicate "
                          "its later records", bucket, obj.key, cutoff)  # fmt: skip
        return None

    work = []
    for obj in objects:
        cutoff = cutoffs.get(obj.records[0].shard)
        if cutoff is not None and obj.records[-1].order >= cutoff:
            work.append(pool.submit(cut, obj, cutoff))
    return {key for f in work if (key := f.result()) is not None}


def _register(s: Settings, glue: Any, raw_objects: Iterable[_Object]) -> None:
    """Register new (symbol, dt) partitions in Glue, once per container; best effort."""
    new = set()
    for obj in raw_objects:
        q = obj.records[0].parsed
        assert isinstance(q, Quote)
        new.add((s.glue_database, s.glue_table, q.symbol, q.timestamp[:10]))
    with _partitions_lock:
        new -= _known_partitions
    if not new:
        return
    try:
        register_partitions(s, [(sym, dt) for _, _, sym, dt in new], glue or aws.client("glue", s))
    except Exception as err:  # the archive is complete without it; sync_partitions repairs
        log.warning("could not register %d Glue partition(s): %s", len(new), err)
        return
    with _partitions_lock:
        _known_partitions.update(new)


def _log_summary(
    records: list[_Record],
    objects: list[_Object],
    items: list[dict[str, Any]],
    failed: set[int],
    cutoffs: dict[str, int],
    trimmed: set[str],
    started: float,
) -> None:
    reasons: dict[str, int] = {}
    for r in records:
        if isinstance(r.parsed, Rejected):
            reasons[r.parsed.reason] = reasons.get(r.parsed.reason, 0) + 1
    summary = {
        "message": "processed batch",
        "records": len(records),
        "accepted": sum(isinstance(r.parsed, Quote) for r in records),
        "quarantined": reasons,
        "failed": len(failed),
        "committed": sum(_committed(r, cutoffs) for r in records),
        "raw_objects": sum(o.kind == "raw" for o in objects),
        "quarantine_objects": sum(o.kind == "quarantine" for o in objects),
        "dynamodb_items": len(items),
        "deleted_objects": len(trimmed),
        "shards": sorted({r.shard for r in records}),
        "first_sequence_number": min((r.seq for r in records), key=lambda q: (len(q), q), default=None),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    log.log(logging.WARNING if failed else logging.INFO, json.dumps(summary, separators=(",", ":")))
