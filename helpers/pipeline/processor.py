"""The processor: one Kinesis batch of quotes -> S3 raw archive, quarantine, DynamoDB, manifest.

Lambda-safe (stdlib + boto3). :func:`process_batch` never raises for bad data: every record is
either stored (raw NDJSON line + processed item), quarantined with its reason, or -- only when
a write to S3 or DynamoDB still fails after retries -- reported in ``batchItemFailures``.

This module is the I/O: the thread pool, PutObject, BatchWriteItem, the manifests and the trims.
What the batch becomes and what is committed after a partial failure are pure rules in
:mod:`helpers.core.batch_plan`; the keys are :mod:`helpers.core.layout`'s:

* ``raw/symbol=<SYM>/dt=<YYYY-MM-DD>/<shard>-<first seq of the group>.ndjson``;
* ``quarantine/dt=<arrival date>/<shard>-<first seq>.ndjson``;
* ``manifests/<shard>/<first seq of the batch>.json`` -- the committed sequence numbers,
  accepted and quarantined (with reasons); counting distinct ones measures the pipeline.

Partial failure: Lambda resumes the shard at the lowest failed sequence number X and re-sends
every record >= X. So after the writes, each object is cut back to its records < X (same key;
objects holding only records >= X are deleted) and the manifest lists only records < X: the
stores hold exactly the committed prefix and the retry adds the rest under keys >= X.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers.core import batch_plan, layout
from helpers.core.batch_plan import ENVELOPE_REASONS, BatchPlan, Record, StoreObject, processed_item
from helpers.core.layout import MANIFEST_PREFIX, manifest_key
from helpers.core.quotes import utc_now_timestamp
from helpers.pipeline import aws, catalog
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "ENVELOPE_REASONS",
    "MANIFEST_PREFIX",
    "MAX_ITEMS_PER_BATCH_WRITE",
    "MAX_WRITE_ATTEMPTS",
    "manifest_key",
    "plan",
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
NDJSON = "application/x-ndjson"

_known_partitions: set[tuple[str, str, str, str]] = set()  # (database, table, symbol, dt), per container
_partitions_lock = threading.Lock()


# --------------------------------------------------------------------------- keys under settings


def raw_key(settings: Settings, symbol: str, dt: str, shard: str, first_seq: str) -> str:
    """:func:`helpers.core.layout.raw_key` under the settings' raw prefix."""
    return layout.raw_key(symbol, dt, shard, first_seq, prefix=settings.raw_prefix)


def quarantine_key(settings: Settings, dt: str, shard: str, first_seq: str) -> str:
    """:func:`helpers.core.layout.quarantine_key` under the settings' quarantine prefix."""
    return layout.quarantine_key(dt, shard, first_seq, prefix=settings.quarantine_prefix)


def _serializer() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """boto3's TypeSerializer over a whole item (imported here: the pure plan never sees boto3)."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    return lambda item: {k: serializer.serialize(v) for k, v in item.items()}


def plan(event: dict[str, Any], settings: Settings, processed_at: str) -> BatchPlan:
    """The batch's records, serialized items and objects under these settings (no I/O)."""
    return batch_plan.plan_batch(
        event,
        processed_at,
        _serializer(),
        raw_prefix=settings.raw_prefix,
        quarantine_prefix=settings.quarantine_prefix,
    )


# --------------------------------------------------------------------------- writes


def _put_object(s3: Any, bucket: str, obj: StoreObject) -> bool:
    try:
        s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body(), ContentType=NDJSON)
    except Exception:
        log.exception("PutObject s3://%s/%s failed; its %d record(s) fail", bucket, obj.key, len(obj.records))
        return False
    obj.written = True
    return True


def _write_items(
    dynamodb: Any, table: str, items: list[dict[str, Any]], sleep: Callable[[float], Any]
) -> set[batch_plan.ItemKey]:
    """BatchWriteItem one chunk, retrying UnprocessedItems; returns the keys still not written."""
    pending = items
    for attempt in range(MAX_WRITE_ATTEMPTS):
        if attempt:
            sleep(aws.backoff_seconds(attempt, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS))
        try:
            response = dynamodb.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": item}} for item in pending]}
            )
        except Exception:
            log.exception("BatchWriteItem on %s failed; %d item(s) fail", table, len(pending))
            return {batch_plan.item_key(item) for item in pending}
        unprocessed = (response.get("UnprocessedItems") or {}).get(table) or []
        if not unprocessed:
            return set()
        pending = [u["PutRequest"]["Item"] for u in unprocessed]
    log.error("BatchWriteItem on %s: %d item(s) still unprocessed after %d attempts",
              table, len(pending), MAX_WRITE_ATTEMPTS)  # fmt: skip
    return {batch_plan.item_key(item) for item in pending}


def _write_series(
    dynamodb: Any, table: str, series: list[dict[str, Any]], sleep: Callable[[float], Any]
) -> set[batch_plan.ItemKey]:
    """Write one symbol's items chunk by chunk in timestamp order, stopping at the first failure.

    The trend Lambda reads a symbol's history from the table when a new bar arrives on the
    table's stream, so a later bar must never land while an earlier one of the same batch is
    still in flight or has failed. Symbols are independent and are written in parallel.
    """
    chunks = batch_plan.chunks(series, MAX_ITEMS_PER_BATCH_WRITE)
    for n, chunk in enumerate(chunks):
        failed = _write_items(dynamodb, table, chunk, sleep)
        if failed:
            return failed | {batch_plan.item_key(item) for rest in chunks[n + 1 :] for item in rest}
    return set()


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
    batch = plan(event, s, now or utc_now_timestamp())
    records = batch.records

    failed: set[int] = set()  # record indexes
    with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="processor") as pool:
        puts = [(obj, pool.submit(_put_object, s3, s.raw_bucket, obj)) for obj in batch.objects]
        writes = [
            pool.submit(_write_series, dynamodb, s.table_name, series, sleep)
            for series in batch_plan.series_by_symbol(batch.items)
        ]
        for obj, put in puts:
            if not put.result():
                failed.update(r.index for r in obj.records)
        for write in writes:
            for key in write.result():
                failed.update(r.index for r in batch.covers[key])

        cutoffs = batch_plan.cutoffs(records, failed)
        for shard, ok in _write_manifests(s3, s.raw_bucket, records, cutoffs, pool).items():
            if not ok:  # the manifest is the commit: without it the whole shard batch is retried
                indexes, cutoffs[shard] = batch_plan.uncommit_shard(records, shard)
                failed |= indexes
        deleted = _trim(s3, s.raw_bucket, batch_plan.trim_plan(batch.objects, cutoffs), pool)

    if register_partitions:
        _register(s, glue, batch_plan.committed_partitions(batch.objects, deleted))
    summary = batch_plan.summary(batch, failed, cutoffs, deleted)
    summary["ms"] = round((time.perf_counter() - started) * 1000, 1)
    log.log(logging.WARNING if failed else logging.INFO, json.dumps(summary, separators=(",", ":")))
    return {"batchItemFailures": batch_plan.batch_item_failures(records, failed)}


def _write_manifests(
    s3: Any, bucket: str, records: list[Record], cutoffs: dict[str, int], pool: ThreadPoolExecutor
) -> dict[str, bool]:
    """Write (or, when nothing is committed, delete) one manifest per shard; shard -> success."""

    def write(shard: str, rows: list[Record]) -> bool:
        key, body = batch_plan.manifest(shard, rows, cutoffs)
        try:
            if body is None:
                s3.delete_object(Bucket=bucket, Key=key)
            else:
                s3.put_object(
                    Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json"
                )
            return True
        except Exception:
            log.exception("manifest s3://%s/%s could not be written; the batch is retried", bucket, key)
            return False

    futures = {
        shard: pool.submit(write, shard, rows) for shard, rows in batch_plan.records_by_shard(records).items()
    }
    return {shard: f.result() for shard, f in futures.items()}


def _trim(s3: Any, bucket: str, actions: list[batch_plan.TrimAction], pool: ThreadPoolExecutor) -> set[str]:
    """Cut written objects back to their committed records; returns the keys deleted."""

    def cut(action: batch_plan.TrimAction) -> str | None:
        obj = action.obj
        try:
            if action.delete:
                s3.delete_object(Bucket=bucket, Key=obj.key)
                return obj.key
            s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body(action.cutoff), ContentType=NDJSON)
        except Exception:
            log.exception("could not cut s3://%s/%s back to records below %d; a retry may duplicate "
                          "its later records", bucket, obj.key, action.cutoff)  # fmt: skip
        return None

    work = [pool.submit(cut, action) for action in actions]
    return {key for f in work if (key := f.result()) is not None}


def _register(s: Settings, glue: Any, partitions: set[layout.Partition]) -> None:
    """Register new (symbol, dt) partitions in Glue, once per container; best effort."""
    new = {(s.glue_database, s.glue_table, symbol, dt) for symbol, dt in partitions}
    with _partitions_lock:
        new -= _known_partitions
    if not new:
        return
    try:
        catalog.register_partitions(s, [(sym, dt) for _, _, sym, dt in new], glue or aws.client("glue", s))
    except Exception as err:  # the archive is complete without it; sync_partitions repairs
        log.warning("could not register %d Glue partition(s): %s", len(new), err)
        return
    with _partitions_lock:
        _known_partitions.update(new)
