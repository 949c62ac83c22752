"""The processor: one Kinesis batch of quotes -> S3 raw archive, quarantine, DynamoDB, manifest.

Lambda-safe (stdlib + boto3). :func:`process_batch` never raises for bad data: every record is
stored (raw NDJSON line + processed item), quarantined with its reason, parked (valid, but its
writes kept failing) or -- while a write to S3 or DynamoDB still fails after retries --
reported in ``batchItemFailures``.

This module is the I/O of one batch: the thread pool, PutObject, BatchWriteItem, the trend marks,
parking and the trims. What the batch becomes is :mod:`helpers.core.batch_plan`'s; the keys are
:mod:`helpers.core.layout`'s; the per-shard commit (checkpoint, intent, cleanup after a give-up)
is :mod:`helpers.pipeline.shard_commit`'s, and why it makes the archive exactly once is argued in
:mod:`helpers.core.checkpoint`. Order of one batch: read the checkpoints, skip what they cover,
record the intent; write the raw and quarantine objects; park what cannot be written; write each
symbol's items in timestamp order up to its first failure and mark that gap-free run; cut every
object back to the committed prefix (Lambda resumes at the lowest failed sequence number);
write the manifest, then the checkpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers.core import batch_plan, layout
from helpers.core.batch_plan import ENVELOPE_REASONS, BatchPlan, Record, StoreObject, processed_item
from helpers.core.checkpoint import PARK_AFTER, PERMANENT_ERRORS, Checkpoint
from helpers.core.layout import MANIFEST_PREFIX, manifest_key
from helpers.core.quotes import Quote, utc_now_timestamp
from helpers.core.trend_plan import mark_request
from helpers.pipeline import aws, catalog, shard_commit
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
MAX_WRITE_ATTEMPTS = 8  # BatchWriteItem calls per item while UnprocessedItems come back
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


def plan(
    event: dict[str, Any] | list[Record],
    settings: Settings,
    processed_at: str,
    checkpoints: dict[str, Checkpoint] | None = None,
) -> BatchPlan:
    """The batch's records, serialized items and objects under these settings (no I/O)."""
    return batch_plan.plan_batch(
        event,
        processed_at,
        _serializer(),
        checkpoints=checkpoints,
        raw_prefix=settings.raw_prefix,
        quarantine_prefix=settings.quarantine_prefix,
    )


# --------------------------------------------------------------------------- writes


def _put_object(s3: Any, bucket: str, obj: StoreObject) -> Exception | None:
    """Write (or, when it holds no record, delete) one object; the error if it failed."""
    try:
        if obj.records:
            s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body(), ContentType=NDJSON)
        else:  # only parked records had this key: remove what an earlier attempt may have left
            s3.delete_object(Bucket=bucket, Key=obj.key)
    except Exception as err:
        log.warning(
            "writing s3://%s/%s failed; its %d record(s) fail: %s", bucket, obj.key, len(obj.records), err
        )
        return err
    obj.written = bool(obj.records)
    return None


def _write_items(
    dynamodb: Any, table: str, items: list[dict[str, Any]], sleep: Callable[[float], Any]
) -> tuple[set[batch_plan.ItemKey], str]:
    """BatchWriteItem one chunk, retrying UnprocessedItems; the keys still not written and why."""
    pending = items
    for attempt in range(MAX_WRITE_ATTEMPTS):
        if attempt:
            sleep(aws.backoff_seconds(attempt, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS))
        try:
            response = dynamodb.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": item}} for item in pending]}
            )
        except Exception as err:
            log.warning("BatchWriteItem on %s failed; %d item(s) fail: %s", table, len(pending), err)
            return {batch_plan.item_key(item) for item in pending}, shard_commit.error_text(err)
        unprocessed = (response.get("UnprocessedItems") or {}).get(table) or []
        if not unprocessed:
            return set(), ""
        pending = [u["PutRequest"]["Item"] for u in unprocessed]
    log.warning("BatchWriteItem on %s: %d item(s) still unprocessed after %d attempts",
                table, len(pending), MAX_WRITE_ATTEMPTS)  # fmt: skip
    return {
        batch_plan.item_key(item) for item in pending
    }, f"UnprocessedItems after {MAX_WRITE_ATTEMPTS} attempts"


def _write_series(
    dynamodb: Any, table: str, series: list[dict[str, Any]], sleep: Callable[[float], Any]
) -> tuple[list[dict[str, Any]], set[batch_plan.ItemKey], str]:
    """Write one symbol's items chunk by chunk in timestamp order, stopping at the first failure.

    Returns (the prefix written without a gap, the keys that failed, why). Items after the
    first failure -- later chunks, and the later items of its chunk that BatchWriteItem did
    store -- are outside the prefix: they are retried with it, and the trend Lambda does not
    evaluate them until a later batch's mark covers them (see :func:`_mark`).
    """
    chunks = batch_plan.chunks(series, MAX_ITEMS_PER_BATCH_WRITE)
    done: list[dict[str, Any]] = []
    for chunk in chunks:
        failed, error = _write_items(dynamodb, table, chunk, sleep)
        if failed:
            for item in chunk:
                if batch_plan.item_key(item) in failed:
                    break
                done.append(item)
            return done, failed, error
        done.extend(chunk)
    return done, set(), ""


def _mark(dynamodb: Any, table: str, prefix: list[dict[str, Any]]) -> str:
    """Mark the last item of a symbol's gap-free prefix for the trend Lambda; the error, or "".

    ``trend_from`` (the prefix's first bar) and ``trend_bars`` (its length) on that item tell the
    trend Lambda, through the table's stream, that every bar of the symbol up to this one is in
    the table: it evaluates ``[trend_from, this bar]`` and nothing else, so a bar is never
    evaluated while an earlier one is missing (BatchWriteItem can store a chunk's later items
    and return an earlier one unprocessed).
    """
    last = prefix[-1]
    try:
        dynamodb.update_item(**mark_request(table, last, prefix[0]["timestamp"]["S"], len(prefix)))
    except Exception as err:
        log.warning("marking %s for the trend Lambda failed: %s", batch_plan.item_key(last), err)
        return shard_commit.error_text(err)
    return ""


# --------------------------------------------------------------------------- the batch


class _Outcome:
    """What went wrong for which records during one batch."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.errors: dict[int, str] = {}  # record index -> its own write error (counted as an attempt)
        self.held: set[int] = set()  # records not written because an earlier one of their symbol failed

    @property
    def failed(self) -> set[int]:
        return set(self.errors) | self.held

    def item_failed(self, keys: Iterable[batch_plan.ItemKey], error: str) -> None:
        for key in keys:
            self.errors.update(
                {r.index: error for r in self.plan.covers[key] if r.index not in self.plan.parked}
            )

    def hold(self, keys: Iterable[batch_plan.ItemKey]) -> None:
        for key in keys:
            self.held.update(
                r.index
                for r in self.plan.covers[key]
                if r.index not in self.plan.parked and r.index not in self.errors
            )

    def object_failed(self, obj: StoreObject, err: Exception) -> None:
        text = shard_commit.error_text(err)
        if aws.error_code(err) in PERMANENT_ERRORS:
            self.plan.parked.update({r.index: text for r in obj.records})
        else:
            self.errors.update({r.index: text for r in obj.records})


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
    decoded = batch_plan.decode_event(event, processed_at)

    with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="processor") as pool:
        marks, unknown = shard_commit.load(s3, s.raw_bucket, {r.shard for r in decoded}, pool)
        batch = plan(decoded, s, processed_at, marks)
        shard_commit.clean_after_give_up(s3, dynamodb, s.raw_bucket, s.table_name, batch, marks)
        unknown.update(shard_commit.write_intents(s3, s.raw_bucket, batch, marks, processed_at, pool))
        out = _Outcome(batch)
        out.errors.update({r.index: unknown[r.shard] for r in batch.records if r.shard in unknown})
        if unknown:  # nothing of these shards is written: everything is retried
            batch.objects = [o for o in batch.objects if o.shard not in unknown]
            batch.items = [i for i in batch.items if not _of_shards(batch, i, unknown)]
            for shard in unknown:
                marks.pop(shard, None)

        # 1. the archive first: an item must never exist without its raw line
        puts = [(obj, pool.submit(_put_object, s3, s.raw_bucket, obj)) for obj in batch.objects]
        for obj, put in puts:
            if (err := put.result()) is not None:
                out.object_failed(obj, err)
        parked_objects = _park(s3, s.raw_bucket, batch, marks, out, pool)
        _unwrite_parked(dynamodb, s.table_name, batch, marks)

        # 2. items of the records archived, each symbol in timestamp order, up to its first failure
        writes = [
            (series, pool.submit(_write_series, dynamodb, s.table_name, series, sleep))
            for series in _writable_series(batch, out)
        ]
        marks_due = []
        for series, write in writes:
            prefix, failed_keys, error = write.result()
            out.item_failed(failed_keys, error)
            out.hold(batch_plan.item_key(item) for item in series[len(prefix) :])
            if prefix:
                marks_due.append((prefix, pool.submit(_mark, dynamodb, s.table_name, prefix)))
        for prefix, marked in marks_due:
            if error := marked.result():
                out.item_failed({batch_plan.item_key(prefix[-1])}, error)

        # 3. cut everything back to the committed prefix, then the manifest and the checkpoint
        cutoffs = batch_plan.cutoffs(batch.records, out.failed)
        written = batch.objects + parked_objects
        deleted = _trim(s3, s.raw_bucket, batch_plan.trim_plan(written, cutoffs), pool)
        uncommitted = shard_commit.commit(
            s3, s.raw_bucket, batch, marks, cutoffs, out.errors, processed_at, pool
        )
        for shard in uncommitted:  # the whole shard's part is retried
            indexes, cutoffs[shard] = batch_plan.uncommit_shard(batch.records, shard)
            out.held |= indexes - set(out.errors)
        if uncommitted:  # readers must not see what no checkpoint covers; the retry rewrites it
            again = [o for o in written if o.shard in uncommitted and o.key not in deleted]
            deleted |= _trim(s3, s.raw_bucket, batch_plan.trim_plan(again, cutoffs), pool)

    failed = out.failed
    if register_partitions:
        _register(s, glue, batch_plan.committed_partitions(batch.objects, deleted))
    summary = batch_plan.summary(batch, failed, cutoffs, deleted)
    summary["ms"] = round((time.perf_counter() - started) * 1000, 1)
    log.log(logging.WARNING if failed else logging.INFO, json.dumps(summary, separators=(",", ":")))
    return {"batchItemFailures": batch_plan.batch_item_failures(batch.records, failed)}


def _of_shards(batch: BatchPlan, item: dict[str, Any], shards: dict[str, str]) -> bool:
    return any(r.shard in shards for r in batch.covers[batch_plan.item_key(item)])


def _writable_series(batch: BatchPlan, out: _Outcome) -> list[list[dict[str, Any]]]:
    """Per symbol, the items to write now: in timestamp order, up to the first one not archived.

    Items whose records are all parked are left out; the records of the items after a failure
    are held (retried with it).
    """
    result = []
    for series in batch_plan.series_by_symbol(batch.items):
        keep: list[dict[str, Any]] = []
        for n, item in enumerate(series):
            rows = [r for r in batch.covers[batch_plan.item_key(item)] if r.index not in batch.parked]
            if not rows:
                continue
            if any(r.index in out.errors for r in rows):
                out.hold(batch_plan.item_key(later) for later in series[n:])
                break
            keep.append(item)
        if keep:
            result.append(keep)
    return result


def _park(
    s3: Any,
    bucket: str,
    batch: BatchPlan,
    marks: dict[str, Checkpoint],
    out: _Outcome,
    pool: ThreadPoolExecutor,
) -> list[StoreObject]:
    """Write the parked records (with their bytes) to ``parked/``; if that fails they are retried."""
    if not batch.parked:
        return []
    attempts = {}
    for r in batch.records:
        if r.index in batch.parked:
            before = (marks.get(r.shard) or Checkpoint(r.shard)).attempts(r.seq)
            # parked before any write (failed PARK_AFTER times), or just failed once more
            attempts[r.index] = before if before >= PARK_AFTER else before + 1
    objects = batch_plan.park_objects(batch.records, batch.parked, attempts)
    for obj, put in [(obj, pool.submit(_put_object, s3, bucket, obj)) for obj in objects]:
        if (err := put.result()) is not None:
            text = shard_commit.error_text(err)
            for r in obj.records:
                batch.parked.pop(r.index, None)
                out.errors[r.index] = text
    for obj in objects:
        if obj.written:
            log.warning(
                "parked %d record(s) of %s in s3://%s/%s", len(obj.records), obj.shard, bucket, obj.key
            )
    return objects


def _unwrite_parked(dynamodb: Any, table: str, batch: BatchPlan, marks: dict[str, Checkpoint]) -> None:
    """Delete the items an earlier, uncommitted attempt may have written for records now parked.

    A parked record has no raw line, so it must have no item either. Only records that failed
    before can have one, and a key another record of the batch still stores is kept.
    """
    kept = {key for key, rows in batch.covers.items() if any(r.index not in batch.parked for r in rows)}
    keys: set[batch_plan.ItemKey] = set()
    for r in batch.records:
        mark = marks.get(r.shard)
        if r.index in batch.parked and isinstance(r.parsed, Quote) and mark and mark.attempts(r.seq):
            key = (r.parsed.symbol, r.parsed.timestamp)
            if key not in kept:
                keys.add(key)
    ordered = sorted(keys)
    for start in range(0, len(ordered), MAX_ITEMS_PER_BATCH_WRITE):
        requests = [
            {"DeleteRequest": {"Key": {"symbol": {"S": sym}, "timestamp": {"S": ts}}}}
            for sym, ts in ordered[start : start + MAX_ITEMS_PER_BATCH_WRITE]
        ]
        try:
            dynamodb.batch_write_item(RequestItems={table: requests})
        except Exception as err:  # the parked line holds the same quote; a redrive writes it again
            log.warning("could not delete %d item(s) of parked records: %s", len(requests), err)


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
            log.exception("could not cut s3://%s/%s back to records below %d; the retry rewrites it",
                          bucket, obj.key, action.cutoff)  # fmt: skip
        return None

    work = [pool.submit(cut, action) for action in actions if action.obj.written]
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
