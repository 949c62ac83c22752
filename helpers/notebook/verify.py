"""Measure what the pipeline stored: counts and samples read back from S3, DynamoDB and the logs.

:func:`store_counts` is the source of ``records_accepted``, ``records_quarantined``,
``dynamodb_items`` and ``raw_records`` in ``reports/summary.json``; each is measured from its own
store, independently:

* accepted / quarantined: *distinct* (shard, sequence number) pairs across the processor's
  manifests (robust to redelivery and retries, which rewrite or add manifests);
* dynamodb_items: ``Scan(Select=COUNT)`` over the processed table, every page;
* raw_records: lines in the ``raw/`` NDJSON objects.

:func:`wait_for_processing` polls these counts (through :func:`helpers.pipeline.aws.wait_until`)
and reports ``settled: False`` on timeout rather than raising. It stops early, ``gave_up: True``,
when records were given up on -- the failure queue holds messages or records are parked
(``failure_queue_depth``, ``parked``; see :mod:`helpers.notebook.failures`) -- since waiting longer
would not bring them. :func:`store_counts` reports ``parked`` (parked lines) too. A missing
bucket or table raises
:class:`~helpers.core.errors.ResourceMissingError` ("run 01_provision first").
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from botocore.exceptions import ClientError

from helpers.core.layout import MANIFEST_PREFIX, PARKED_PREFIX
from helpers.core.quotes import Quote
from helpers.notebook.history import items_frame, missing_as_error, plain_item
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "POLL_SECONDS",
    "WAIT_TIMEOUT_SECONDS",
    "processor_log_lines",
    "quarantined_records",
    "raw_sample",
    "sample_items",
    "store_counts",
    "unprocessed",
    "wait_for_processing",
]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
WAIT_TIMEOUT_SECONDS = 180.0
READ_THREADS = 8


class _NotSettled(Exception):
    """``aws.wait_until``'s timeout, caught: :func:`wait_for_processing` reports it, never raises it."""


class _GaveUp(Exception):
    """Records were given up on (failure queue, parked): :func:`wait_for_processing` stops waiting."""


def _keys(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with missing_as_error(f"S3 bucket {bucket}", *aws.BUCKET_MISSING_CODES):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend(page.get("Contents", []))
    return found


def _read_all(s3: Any, bucket: str, keys: list[str]) -> list[bytes]:
    def read(key: str) -> bytes:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return list(pool.map(read, keys))


def _manifest_counts(
    s: Settings, s3: Any, cache: dict[tuple[str, str], dict[str, Any]] | None = None
) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str], int]:
    """Distinct accepted and quarantined (shard, seq) across manifests; and the manifest count."""
    cache = {} if cache is None else cache
    objects = _keys(s3, s.raw_bucket, MANIFEST_PREFIX)
    wanted = [(o["Key"], o.get("ETag", "")) for o in objects]
    missing = [w for w in wanted if w not in cache]
    for w, body in zip(missing, _read_all(s3, s.raw_bucket, [k for k, _ in missing]), strict=True):
        cache[w] = json.loads(body)
    accepted: set[tuple[str, str]] = set()
    quarantined: dict[tuple[str, str], str] = {}
    for w in wanted:
        manifest = cache[w]
        shard = manifest["shard"]
        accepted.update((shard, seq) for seq in manifest["accepted"])
        quarantined.update({(shard, seq): reason for seq, reason in manifest["quarantined"].items()})
    return accepted, quarantined, len(wanted)


def dynamodb_count(s: Settings, dynamodb: Any = None) -> int:
    """Items in the processed table: ``Scan(Select=COUNT)``, every page."""
    dynamodb = dynamodb or aws.client("dynamodb", s)
    total = 0
    with missing_as_error(f"DynamoDB table {s.table_name}"):
        for page in dynamodb.get_paginator("scan").paginate(TableName=s.table_name, Select="COUNT"):
            total += int(page["Count"])
    return total


def store_counts(settings: Settings | None = None, *, s3: Any = None, dynamodb: Any = None) -> dict[str, Any]:
    """Counts measured from the stores (see the module docstring)."""
    s = settings or load_settings()
    s3 = s3 or aws.client("s3", s)
    accepted, quarantined, manifests = _manifest_counts(s, s3)
    raw_objects = _keys(s3, s.raw_bucket, s.raw_prefix)
    bodies = _read_all(s3, s.raw_bucket, [o["Key"] for o in raw_objects])
    parked_objects = _keys(s3, s.raw_bucket, PARKED_PREFIX)
    parked = sum(b.count(b"\n") for b in _read_all(s3, s.raw_bucket, [o["Key"] for o in parked_objects]))
    quarantine_objects = _keys(s3, s.raw_bucket, s.quarantine_prefix)
    quarantine_lines = sum(
        b.count(b"\n") for b in _read_all(s3, s.raw_bucket, [o["Key"] for o in quarantine_objects])
    )
    return {
        "records_accepted": len(accepted),
        "records_quarantined": dict(sorted(Counter(quarantined.values()).items())),
        "dynamodb_items": dynamodb_count(s, dynamodb),
        "raw_records": sum(b.count(b"\n") for b in bodies),
        "raw_objects": len(raw_objects),
        "quarantine_records": quarantine_lines,
        "manifests": manifests,
        "parked": parked,
    }


def unprocessed(
    quotes: Iterable[Quote], settings: Settings | None = None, *, dynamodb: Any = None
) -> list[Quote]:
    """The quotes that have no item in the processed table, in their order: what to produce again
    after records were lost (a producer that gave up, a crash of the stack before it saved them).

    One key-only Query per symbol; run it once the pipeline is quiet
    (:func:`wait_for_processing`), or quotes still on their way count as missing.
    """
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    wanted = list(quotes)
    stored: dict[str, set[str]] = {}
    with missing_as_error(f"DynamoDB table {s.table_name}"):
        for symbol in sorted({q.symbol for q in wanted}):
            pages = dynamodb.get_paginator("query").paginate(
                TableName=s.table_name,
                KeyConditionExpression="#s = :s",
                ProjectionExpression="#t",
                ExpressionAttributeNames={"#s": "symbol", "#t": "timestamp"},
                ExpressionAttributeValues={":s": {"S": symbol}},
            )
            stored[symbol] = {item["timestamp"]["S"] for page in pages for item in page.get("Items", [])}
    return [q for q in wanted if q.timestamp not in stored[q.symbol]]


def wait_for_processing(
    settings: Settings | None = None,
    expected: int = 0,
    timeout: float = WAIT_TIMEOUT_SECONDS,
    *,
    poll: float = POLL_SECONDS,
    s3: Any = None,
    dynamodb: Any = None,
    sqs: Any = None,
) -> dict[str, Any]:
    """Poll until ``expected`` records are committed (accepted + quarantined) and the counts settle.

    Settled means two polls in a row, after ``expected`` was reached, measured the same
    :func:`store_counts`. Returns those counts plus ``settled`` (False when ``timeout`` ran out:
    then the last counts measured), ``gave_up`` (True when it stopped early because the failure
    queue has messages or records are parked), ``failure_queue_depth`` and ``seconds``. Never
    raises on timeout. Clients passed replace the defaults; given ``s3`` without ``sqs`` (stubs),
    the failure queue is not read (``failure_queue_depth``: None).
    """
    from helpers.notebook import failures

    s = settings or load_settings()
    if sqs is None and s3 is None:
        sqs = aws.client("sqs", s)
    s3 = s3 or aws.client("s3", s)
    started = time.monotonic()
    cache: dict[tuple[str, str], dict[str, Any]] = {}
    previous: dict[str, Any] | None = None
    committed = depth = parked = 0

    def counts_settled() -> bool:
        nonlocal previous, committed, depth, parked
        accepted, quarantined, _ = _manifest_counts(s, s3, cache)
        committed = len(accepted) + len(quarantined)
        if committed < expected:
            depth = failures.failure_queue_depth(s, sqs=sqs) if sqs is not None else 0
            parked = len(_keys(s3, s.raw_bucket, PARKED_PREFIX))
            if depth or parked:
                raise _GaveUp  # given up on: waiting longer brings nothing
            return False
        counts = store_counts(s, s3=s3, dynamodb=dynamodb)
        settled, previous = counts == previous, counts
        return settled

    settled = gave_up = False
    try:
        aws.wait_until(counts_settled, "processing", timeout, poll=poll, error=_NotSettled)
        settled = True
    except _NotSettled:
        log.warning(
            "processing did not settle in %.0f s (%d of %d records committed)", timeout, committed, expected
        )
    except _GaveUp:
        gave_up = True
        log.warning("%d of %d records committed; given up on: %d failure message(s) in %s, %d parked "
                    "object(s): see 04's failures section", committed, expected, depth, s.failure_queue_name,
                    parked)  # fmt: skip
    counts = previous or store_counts(s, s3=s3, dynamodb=dynamodb)
    final_depth = failures.failure_queue_depth(s, sqs=sqs) if sqs is not None else None
    return {**counts, "settled": settled, "gave_up": gave_up, "failure_queue_depth": final_depth,
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


# --------------------------------------------------------------------------- tables for notebooks


def sample_items(settings: Settings | None = None, limit: int = 10, *, dynamodb: Any = None) -> pd.DataFrame:
    """A few processed items (one Scan page of ``limit``) as a DataFrame, as :mod:`~helpers.notebook.history`
    reads them: sorted by symbol and timestamp, numbers as float, volume as int."""
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    with missing_as_error(f"DynamoDB table {s.table_name}"):
        items = dynamodb.scan(TableName=s.table_name, Limit=limit).get("Items", [])
    return items_frame(plain_item(item) for item in items)


def raw_sample(settings: Settings | None = None, limit: int = 10, *, s3: Any = None) -> pd.DataFrame:
    """The first lines of the raw archive with their object key, as a DataFrame."""
    s = settings or load_settings()
    s3 = s3 or aws.client("s3", s)
    rows: list[dict[str, Any]] = []
    for obj in _keys(s3, s.raw_bucket, s.raw_prefix):
        body = s3.get_object(Bucket=s.raw_bucket, Key=obj["Key"])["Body"].read()
        for line in body.splitlines():
            rows.append({"key": obj["Key"], **json.loads(line)})
            if len(rows) >= limit:
                return pd.DataFrame(rows)
    return pd.DataFrame(rows)


def quarantined_records(
    settings: Settings | None = None, limit: int = 100, *, s3: Any = None
) -> pd.DataFrame:
    """Quarantined records with their reason, detail and the record as received (``repr`` of the bytes)."""
    s = settings or load_settings()
    s3 = s3 or aws.client("s3", s)
    rows: list[dict[str, Any]] = []
    keys = [o["Key"] for o in _keys(s3, s.raw_bucket, s.quarantine_prefix)]
    for key, body in zip(keys, _read_all(s3, s.raw_bucket, keys), strict=True):
        for line in body.splitlines():
            entry = json.loads(line)
            entry["record"] = repr(base64.b64decode(entry.pop("data_base64")))[:120]
            rows.append({**entry, "key": key})
    columns = ["reason", "detail", "record", "sequence_number", "partition_key", "shard", "arrival", "key"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["shard", "sequence_number"], key=_numeric).head(limit).reset_index(drop=True)


def _numeric(column: Any) -> Any:
    return column.map(lambda v: str(v).zfill(64)) if column.name == "sequence_number" else column


def processor_log_lines(
    settings: Settings | None = None, limit: int = 20, *, since_seconds: float = 3600, logs: Any = None
) -> pd.DataFrame:
    """The most recent lines of ``/aws/lambda/<processor_function>`` (CloudWatch Logs) as a DataFrame.

    Empty (no error) while the log group does not exist, i.e. before the first invocation.
    """
    s = settings or load_settings()
    logs = logs or aws.client("logs", s)
    group = f"/aws/lambda/{s.processor_function}"
    start = int((time.time() - since_seconds) * 1000)
    events: list[dict[str, Any]] = []
    try:
        for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group, startTime=start):
            events.extend(page.get("events", []))
    except ClientError as err:
        if not aws.is_missing(err):
            raise
        log.info("log group %s does not exist yet (no invocation)", group)
    events.sort(key=lambda e: e["timestamp"])
    rows = [
        {
            "time": pd.Timestamp(e["timestamp"], unit="ms", tz="UTC"),
            "stream": e.get("logStreamName", ""),
            "message": e["message"].rstrip(),
        }
        for e in events[-limit:]
    ]
    return pd.DataFrame(rows, columns=["time", "stream", "message"])
