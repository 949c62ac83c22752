"""The processor's per-shard commit, as S3 and DynamoDB calls: read the mark, clean up after a
give-up, record the intent, commit.

Lambda-safe (stdlib + boto3). The rules -- what is committed, why the archive is then exactly
once, what a give-up leaves -- are :mod:`helpers.core.checkpoint`'s; the batch itself is
:mod:`helpers.pipeline.processor`'s. Per shard of a batch, in this order:

1. :func:`load` reads ``checkpoints/<shard>.json`` (none yet: nothing committed);
2. :func:`clean_after_give_up` deletes what an attempt left for records Lambda then skipped;
3. :func:`write_intents` records this attempt's :class:`~helpers.core.checkpoint.Pending` before
   its first write (a shard whose intent cannot be written writes nothing);
4. the processor writes objects and items;
5. :func:`commit` writes the manifest, then the checkpoint with the new mark.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers.core import batch_plan, layout
from helpers.core.batch_plan import BatchPlan, Record
from helpers.core.checkpoint import Checkpoint, Pending
from helpers.core.quotes import Quote
from helpers.pipeline import aws

__all__ = ["clean_after_give_up", "commit", "error_text", "load", "write_intents"]

log = logging.getLogger(__name__)

JSON = "application/json"


def error_text(err: Exception) -> str:
    """``Code: message`` of an AWS error, ``Type: message`` of any other."""
    code = aws.error_code(err)
    return f"{code}: {err}" if code else f"{type(err).__name__}: {err}"


def load(
    s3: Any, bucket: str, shards: set[str], pool: ThreadPoolExecutor
) -> tuple[dict[str, Checkpoint], dict[str, str]]:
    """Each shard's checkpoint (absent: nothing committed yet); shards whose mark is unknown -> why."""

    def read(shard: str) -> Checkpoint:
        try:
            body = s3.get_object(Bucket=bucket, Key=layout.checkpoint_key(shard))["Body"].read()
        except Exception as err:
            if aws.error_code(err) in ("NoSuchKey", "404"):
                return Checkpoint(shard)
            raise
        return Checkpoint.from_json(body, shard)

    futures = {shard: pool.submit(read, shard) for shard in sorted(shards)}
    found, unknown = {}, {}
    for shard, future in futures.items():
        try:
            found[shard] = future.result()
        except Exception as err:  # without its mark a shard's records cannot be told new or committed
            log.warning("checkpoint of %s could not be read; its records are retried: %s", shard, err)
            unknown[shard] = error_text(err)
    return found, unknown


def _first_by_shard(batch: BatchPlan) -> dict[str, list[Record]]:
    return batch_plan.records_by_shard(batch.records)


def clean_after_give_up(
    s3: Any, dynamodb: Any, bucket: str, table: str, batch: BatchPlan, marks: Mapping[str, Checkpoint]
) -> int:
    """Delete what attempts wrote for records Lambda skipped after giving up; returns the deletions.

    Items are deleted only while they still carry one of those attempts' ``processed_at`` and no
    record of this batch stores the same key.
    """
    rewritten = set(batch.covers)
    deleted = 0
    for shard, rows in _first_by_shard(batch).items():
        mark = marks.get(shard)
        left = mark.pending.given_up(rows[0].order) if mark and mark.pending else None
        if left is None:
            continue
        log.warning(
            "%s resumed at %s after records from %s were given up: deleting %d object(s) and up to %d "
            "item(s) written for them (they are in the on-failure destination, to redrive)",
            shard, rows[0].seq, left.first, len(left.objects), len(left.items),
        )  # fmt: skip
        for key, _ in left.objects:
            try:
                s3.delete_object(Bucket=bucket, Key=key)
                deleted += 1
            except Exception as err:
                log.warning("could not delete s3://%s/%s left by a given-up attempt: %s", bucket, key, err)
        for _, symbol, timestamp in left.items:
            if (symbol, timestamp) in rewritten:
                continue
            try:
                stamps = {f":p{n}": {"S": stamp} for n, stamp in enumerate(left.processed_at)}
                dynamodb.delete_item(
                    TableName=table,
                    Key={"symbol": {"S": symbol}, "timestamp": {"S": timestamp}},
                    ConditionExpression=f"processed_at IN ({', '.join(stamps)})",
                    ExpressionAttributeValues=stamps,
                )
                deleted += 1
            except Exception as err:
                if aws.error_code(err) != "ConditionalCheckFailedException":
                    log.warning(
                        "could not delete item %s %s left by a given-up attempt: %s", symbol, timestamp, err
                    )
    return deleted


def _intent(shard: str, rows: list[Record], batch: BatchPlan, processed_at: str) -> Pending:
    first = rows[0].seq
    objects = [(o.key, o.anchor) for o in batch.objects if o.shard == shard]
    objects += [(layout.manifest_key(shard, first), first), (layout.parked_key(shard, first), first)]
    items = [
        (r.seq, r.parsed.symbol, r.parsed.timestamp)
        for r in rows
        if isinstance(r.parsed, Quote) and r.index not in batch.parked
    ]
    return Pending(first, (processed_at,), tuple(objects), tuple(items))


def write_intents(
    s3: Any,
    bucket: str,
    batch: BatchPlan,
    marks: Mapping[str, Checkpoint],
    processed_at: str,
    pool: ThreadPoolExecutor,
) -> dict[str, str]:
    """Record each shard's intent in its checkpoint before any write; shard -> error for those that failed."""

    def write(shard: str, rows: list[Record]) -> str:
        mark = marks.get(shard) or Checkpoint(shard)
        mark = mark.intending(_intent(shard, rows, batch, processed_at).merged(mark.pending))
        try:
            s3.put_object(
                Bucket=bucket, Key=layout.checkpoint_key(shard), Body=mark.to_json(), ContentType=JSON
            )
        except Exception as err:
            log.warning("the intent of %s could not be recorded; its records are retried: %s", shard, err)
            return error_text(err)
        return ""

    futures = {
        shard: pool.submit(write, shard, rows)
        for shard, rows in _first_by_shard(batch).items()
        if shard in marks
    }
    return {shard: error for shard, f in futures.items() if (error := f.result())}


def commit(
    s3: Any,
    bucket: str,
    batch: BatchPlan,
    marks: Mapping[str, Checkpoint],
    cutoffs: Mapping[str, int],
    errors: Mapping[int, str],
    processed_at: str,
    pool: ThreadPoolExecutor,
) -> set[str]:
    """Per shard: the manifest, then the checkpoint (the commit); returns the shards that failed.

    The checkpoint keeps, as pending, the items written above the cutoff: retried at once when
    Lambda resumes at the cutoff, deleted by :func:`clean_after_give_up` if it skips them.
    """

    def write(shard: str, rows: list[Record]) -> bool:
        key, body = batch_plan.manifest(shard, rows, cutoffs, batch.parked)
        try:
            if body is None:
                s3.delete_object(Bucket=bucket, Key=key)
            else:
                s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType=JSON)
            kept = [r for r in rows if batch_plan.committed(r, cutoffs)]
            above = [r for r in rows if not batch_plan.committed(r, cutoffs)]
            failed = {r.seq: errors[r.index] for r in rows if r.index in errors}
            left = _intent(shard, above, batch, processed_at) if above else None
            mark = marks.get(shard) or Checkpoint(shard)
            if left is not None:  # objects are cut back already; items above the cutoff stay
                left = Pending(left.first, left.processed_at, (), left.items).merged(mark.pending)
            mark = mark.advance(kept, failed, left)
            s3.put_object(
                Bucket=bucket, Key=layout.checkpoint_key(shard), Body=mark.to_json(), ContentType=JSON
            )
            return True
        except Exception as err:
            log.warning(
                "the commit of %s (s3://%s/%s) failed; its records are retried: %s", shard, bucket, key, err
            )
            return False

    futures = {
        shard: pool.submit(write, shard, rows)
        for shard, rows in _first_by_shard(batch).items()
        if shard in marks
    }
    return {shard for shard, f in futures.items() if not f.result()}
