"""The trend Lambda's core: DynamoDB stream batches of processed bars -> SMA5/SMA20 crossover alerts.

Lambda-safe (stdlib + boto3). This module is the I/O (Query, PutItem, Publish); the pure rules --
grouping stream records, the window decision, the alert message and record -- are in
:mod:`helpers.core.trend_plan`. For one stream batch, :func:`evaluate_batch`

1. takes the *marked* records (:func:`~helpers.core.trend_plan.mark_request`: the processor marks
   the last item of each gap-free run of a symbol it wrote) and, per symbol, the span they cover;
   the item writes themselves are skipped (see "Order" below);
2. per symbol, reads the price window it needs with ONE Query, newest first, ending at the span's
   newest bar: the span, the ``lookback_needed()`` bars before it and a margin. More pages only
   when that window shows no non-zero state yet (a flat run: the last non-zero state can be
   arbitrarily old, see :mod:`helpers.core.indicators`) - no per-symbol state to keep consistent
   anywhere;
3. evaluates every bar of the span, as read from the table, with
   :func:`~helpers.core.indicators.signals_for_new_bars`, the shared crossover definition, so a
   crossover inside a batch is never skipped;
4. delivers each signal exactly once per signal bar (:func:`deliver_all`, a symbol's signals in
   bar order):

   * one BatchGetItem finds which of the batch's signals are recorded; the new ones are written
     to the alerts table as ``published = false`` (BatchWriteItem; one invocation per shard at a
     time, see :func:`_record_all`), a record left unpublished by a crash is claimed with a
     conditional update; only the writer of a new record, or the claimer, publishes;
   * SNS PublishBatch, up to 10 alerts a call in bar order (human-readable body, message
     attributes ``symbol``, ``signal`` and the exact values), then one BatchWriteItem marking
     those ``published = true``: about 0.25 calls per alert;
   * a record already ``published`` is skipped: redelivered batches, retries, MODIFY events of
     evaluated bars and replays publish nothing new.

Only genuine errors (AWS calls failing after botocore's retries) are reported in
``batchItemFailures``: all stream records of the symbol concerned, so Lambda retries from there;
what was already sent is skipped on the retry. Malformed images are logged and skipped.

**Order.** A bar's signal depends on every earlier bar of its symbol, so a bar must not be
evaluated while an earlier one is missing from the table. Kinesis keeps a shard's order and the
producer keeps each symbol's order through its retries (:mod:`helpers.notebook.producer`), but
BatchWriteItem can store a chunk's later items and return an earlier one unprocessed, and a
failed item is retried by a later invocation. The processor therefore marks a run only once it
is in the table without a gap, and this Lambda evaluates marked runs only: the alerts equal the
crossover definition over the processed series whatever order the items landed in. A bar that
reaches the processor after later bars of its symbol were committed (a producer that does not
keep order, a redrive) is evaluated with its run, but the later bars' signals are not revisited.

**The alert guarantee: at least once, with a stable** ``alert_id``. One window is left open: a
crash after SNS accepted a PublishBatch but before its records are marked ``published`` re-
publishes those alerts (at most 10) on the retry. A standard SNS topic cannot de-duplicate, so the
repeat is delivered; every message carries the same ``alert_id`` (message attribute, and in the
body), derived from (symbol, bar time, signal) alone, and every reader drops repeats by it and
counts them (:func:`helpers.notebook.alerts.receive_alerts`: ``duplicates``; ``alerts_duplicates``
in ``summary.json``). Never more than one alert per signal bar reaches a reader's result; the
count says how often the window was hit.

Option ``alerts_fifo``: an SNS FIFO topic, published with ``MessageGroupId`` = symbol and
``MessageDeduplicationId`` = ``alert_id`` (:func:`~helpers.core.trend_plan.publish_request`), so
SNS itself drops a re-publication within its 5-minute deduplication window (the topic also has
content-based deduplication on; the explicit id takes precedence). FIFO topics deliver to SQS
queues only -- here an SQS FIFO queue, which keeps the order per symbol and de-duplicates too --
never to email, SMS, HTTP(S) or Lambda subscribers. A re-publication after the window (a crash,
then a retry more than 5 minutes later) is delivered again: readers still de-duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from helpers.core.errors import PipelineError
from helpers.core.indicators import Bar, Signal, signals_for_new_bars
from helpers.core.quotes import utc_now_timestamp
from helpers.core.trend_plan import (
    ALERT_ATTRIBUTES,
    QUERY_MARGIN,
    SymbolBatch,
    alert_item,
    first_limit,
    format_alert,
    group_stream_records,
    next_limit,
    publish_request,
    window_bars,
    window_request,
    window_state,
)
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "ALERT_ATTRIBUTES",
    "ALREADY_SENT",
    "PUBLISHED",
    "QUERY_MARGIN",
    "REPUBLISHED",
    "AlertInProgress",
    "AlertNotPublished",
    "BatchResult",
    "deliver",
    "deliver_all",
    "evaluate",
    "evaluate_batch",
    "format_alert",
    "topic_arn",
    "topic_arn_for_function",
]

log = logging.getLogger(__name__)

_CONDITION_FAILED = "ConditionalCheckFailedException"
MAX_PUBLISH_BATCH = 10  # PublishBatch limit
BATCH_ATTEMPTS = 4  # BatchGetItem/BatchWriteItem calls while keys or items come back unprocessed
MAX_BATCH_GET = 100  # BatchGetItem limit
MAX_BATCH_WRITE = 25  # BatchWriteItem limit

# Outcomes of deliver()
PUBLISHED, REPUBLISHED, ALREADY_SENT = "published", "republished", "already_sent"


class AlertNotPublished(PipelineError):
    """SNS refused some messages of a PublishBatch; the symbol's stream records are retried."""


class AlertInProgress(PipelineError):
    """Another invocation holds the same unpublished alert right now; its stream records are retried.

    :func:`evaluate` reports the symbol's records in ``batchItemFailures``, so Lambda retries them
    and the retry publishes the alert or finds it sent; calling :func:`deliver` yourself, call it
    again a moment later.
    """


# --------------------------------------------------------------------------- topic


def topic_arn(settings: Settings, *, account: str | None = None, partition: str | None = None) -> str:
    """The alert topic's ARN; without ``account``, asks STS who we are (needs no IAM permission)."""
    if account is None:
        caller = aws.client("sts", settings).get_caller_identity()
        account = str(caller["Account"])
        partition = partition or str(caller["Arn"]).split(":")[1]
    return f"arn:{partition or 'aws'}:sns:{settings.region}:{account}:{settings.topic_name}"


def topic_arn_for_function(settings: Settings, function_arn: str) -> str:
    """The alert topic's ARN in the account and partition of the invoked function's ARN."""
    parts = function_arn.split(":")
    if len(parts) < 5 or not parts[4]:
        return topic_arn(settings)
    return topic_arn(settings, account=parts[4], partition=parts[1])


# --------------------------------------------------------------------------- history window


def _history(
    dynamodb: Any, table: str, symbol: str, first: str, last: str, new_count: int
) -> tuple[list[Bar], int, int]:
    """Bars of ``symbol`` up to ``last`` (ascending) enough to resume before ``first``.

    Returns (bars, last_state, queries): ``last_state`` is the last non-zero state before
    ``first`` when the window had to be bounded, 0 when the window reaches the series' start.
    """
    request = window_request(table, symbol, last)
    limit = first_limit(new_count)
    newest_first: list[Bar] = []
    queries = 0
    while True:
        page = dynamodb.query(Limit=limit, **request)
        queries += 1
        newest_first.extend(window_bars(page.get("Items", [])))
        start = page.get("LastEvaluatedKey")
        if not start:
            return newest_first[::-1], 0, queries  # the whole prior series
        state = window_state(newest_first, first)
        if state is not None:
            return newest_first[::-1], state, queries
        request["ExclusiveStartKey"] = start
        limit = next_limit(limit)


# --------------------------------------------------------------------------- delivery


def _claim(dynamodb: Any, table: str, signal: Signal, existing: Mapping[str, Any] | None) -> bool:
    """True if this invocation now owns the alert's publication; False if it was already sent."""
    key = {"alert_id": {"S": signal.alert_id}}
    if existing is None:  # older servers do not return the item with the condition failure
        existing = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    if existing is None:
        raise AlertInProgress(
            f"alert {signal.alert_id}: its record in {table} vanished while being claimed; "
            "retry the stream record (Lambda retries the records reported in batchItemFailures)"
        )
    if existing.get("published", {}).get("BOOL"):
        return False
    seen = existing.get("attempts", {"N": "1"})
    try:  # take over an unpublished record left by a crash (or a failed Publish): one winner only
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET attempts = attempts + :one",
            ConditionExpression="published = :false AND attempts = :seen",
            ExpressionAttributeValues={":one": {"N": "1"}, ":false": {"BOOL": False}, ":seen": seen},
        )
    except ClientError as err:
        if aws.error_code(err) == _CONDITION_FAILED:
            raise AlertInProgress(
                f"alert {signal.alert_id} in {table} is being published by another invocation; retry "
                "the stream record later: the retry publishes it or finds it sent"
            ) from err
        raise
    return True


def _record(dynamodb: Any, table: str, signal: Signal, now: str) -> str:
    """Record the signal unpublished (conditional PutItem), or claim a record a crash left unpublished.

    PUBLISHED: a new record, this invocation publishes; REPUBLISHED: a claimed one; ALREADY_SENT.
    """
    try:
        dynamodb.put_item(
            TableName=table,
            Item=alert_item(signal, now),
            ConditionExpression="attribute_not_exists(alert_id)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as err:
        if aws.error_code(err) != _CONDITION_FAILED:
            raise
        return REPUBLISHED if _claim(dynamodb, table, signal, err.response.get("Item")) else ALREADY_SENT
    return PUBLISHED


def _existing(dynamodb: Any, table: str, signals: list[Signal], sleep: Any) -> dict[str, dict[str, Any]]:
    """The alerts-table records of ``signals`` that exist (BatchGetItem, consistent), by alert_id."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(signals), MAX_BATCH_GET):
        keys = [{"alert_id": {"S": sig.alert_id}} for sig in signals[start : start + MAX_BATCH_GET]]
        for attempt in range(BATCH_ATTEMPTS + 1):
            if not keys:
                break
            if attempt == BATCH_ATTEMPTS:
                raise AlertInProgress(f"BatchGetItem on {table} kept {len(keys)} key(s) unprocessed; retry")
            if attempt:
                sleep(aws.backoff_seconds(attempt, base=0.05, cap=1.0))
            response = dynamodb.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
            for item in (response.get("Responses") or {}).get(table) or []:
                found[item["alert_id"]["S"]] = item
            keys = ((response.get("UnprocessedKeys") or {}).get(table) or {}).get("Keys") or []
    return found


def _put_all(dynamodb: Any, table: str, items: list[dict[str, Any]], sleep: Any) -> list[dict[str, Any]]:
    """BatchWriteItem the items (25 a call, UnprocessedItems retried); those still not written."""
    left: list[dict[str, Any]] = []
    for start in range(0, len(items), MAX_BATCH_WRITE):
        puts = [{"PutRequest": {"Item": item}} for item in items[start : start + MAX_BATCH_WRITE]]
        for attempt in range(BATCH_ATTEMPTS):
            if not puts:
                break
            if attempt:
                sleep(aws.backoff_seconds(attempt, base=0.05, cap=1.0))
            response = dynamodb.batch_write_item(RequestItems={table: puts})
            puts = (response.get("UnprocessedItems") or {}).get(table) or []
        left += [put["PutRequest"]["Item"] for put in puts]
    return left


def _record_all(dynamodb: Any, table: str, signals: list[Signal], now: str, sleep: Any) -> list[str]:
    """:func:`_record` for a symbol's signals in a few calls: one read, then the new records written.

    A BatchGetItem finds what is recorded: published ones are ALREADY_SENT, unpublished ones
    (a crash) are claimed one by one (:func:`_claim`, conditional). The new ones are written
    unpublished with BatchWriteItem, 25 a call, before anything is published. That write is not
    conditional: it relies on Lambda invoking one batch per shard at a time, and a symbol's
    records all being on one shard, so no other invocation of the mapping records the same
    alert between the read and the write. (A second mapping on the same stream could; its
    repeat carries the same ``alert_id``, which readers drop and count.) A record BatchWriteItem
    leaves unprocessed is written with the conditional PutItem instead.
    """
    existing = _existing(dynamodb, table, signals, sleep)
    outcomes: list[str] = []
    new: list[Signal] = []
    for signal in signals:
        item = existing.get(signal.alert_id)
        if item is None:
            new.append(signal)
            outcomes.append(PUBLISHED)
        elif item.get("published", {}).get("BOOL"):
            outcomes.append(ALREADY_SENT)
        else:
            outcomes.append(REPUBLISHED if _claim(dynamodb, table, signal, item) else ALREADY_SENT)
    left = {
        item["alert_id"]["S"] for item in _put_all(dynamodb, table, [alert_item(g, now) for g in new], sleep)
    }
    for n, signal in enumerate(signals):
        if signal.alert_id in left:
            outcomes[n] = _record(dynamodb, table, signal, now)
    return outcomes


def _publish(sns: Any, topic: str, due: list[tuple[Signal, str]]) -> dict[str, str]:
    """One PublishBatch call (at most 10, in bar order): alert_id -> message id of those SNS took."""
    entries = []
    for n, (signal, _) in enumerate(due):
        request = publish_request(signal, topic)
        del request["TopicArn"]
        entries.append({"Id": str(n), **request})
    response = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    by_id = {str(n): signal.alert_id for n, (signal, _) in enumerate(due)}
    sent = {by_id[ok["Id"]]: str(ok["MessageId"]) for ok in response.get("Successful") or []}
    for failed in response.get("Failed") or []:
        log.warning("PublishBatch on %s: %s not published: %s %s", topic, by_id.get(failed.get("Id"), "?"),
                    failed.get("Code"), failed.get("Message"))  # fmt: skip
    return sent


def _mark(
    dynamodb: Any,
    table: str,
    due: list[tuple[Signal, str]],
    sent: Mapping[str, str],
    now: str,
    sleep: Any = time.sleep,
) -> None:
    """Mark the published records ``published``: one BatchWriteItem for new records, UpdateItem otherwise.

    A new record is this invocation's own (written just before, with one attempt), so it is
    rewritten whole with the publication fields; a claimed one (its attempts moved on) and any
    put BatchWriteItem leaves unprocessed are updated one by one. A failure raises: the stream
    records are retried and the alert re-sent with its ``alert_id`` (at least once).
    """
    at = utc_now_timestamp()
    published = {"published": {"BOOL": True}, "published_at": {"S": at}}
    marked = [
        {**alert_item(signal, now), **published, "sns_message_id": {"S": sent[signal.alert_id]}}
        for signal, outcome in due
        if outcome == PUBLISHED and signal.alert_id in sent
    ]
    left = {item["alert_id"]["S"] for item in _put_all(dynamodb, table, marked, sleep)}
    for signal, outcome in due:
        if signal.alert_id in sent and (outcome == REPUBLISHED or signal.alert_id in left):
            dynamodb.update_item(
                TableName=table,
                Key={"alert_id": {"S": signal.alert_id}},
                UpdateExpression="SET published = :true, published_at = :at, sns_message_id = :id",
                ExpressionAttributeValues={
                    ":true": {"BOOL": True}, ":at": {"S": at}, ":id": {"S": sent[signal.alert_id]},
                },
            )  # fmt: skip


def deliver_all(
    signals: list[Signal], *, dynamodb: Any, sns: Any, alerts_table: str, topic: str
) -> list[str]:
    """Record, publish and mark signals (one symbol's, in bar order) so each is sent once; their outcomes.

    The signals' records are read in one BatchGetItem and the new ones written unpublished with
    BatchWriteItem (:func:`_record_all`); the ones to send go out in PublishBatch calls of
    :data:`MAX_PUBLISH_BATCH`, in order, each followed by one BatchWriteItem marking them
    ``published``: about 0.25 calls per alert instead of 3. A message SNS refused raises
    :class:`AlertNotPublished` after the others are marked, so Lambda retries the records and
    the retry sends only what is left.
    """
    now = utc_now_timestamp()
    outcomes = _record_all(dynamodb, alerts_table, signals, now, time.sleep) if signals else []
    due = [
        (signal, outcome)
        for signal, outcome in zip(signals, outcomes, strict=True)
        if outcome != ALREADY_SENT
    ]
    for start in range(0, len(due), MAX_PUBLISH_BATCH):
        chunk = due[start : start + MAX_PUBLISH_BATCH]
        sent = _publish(sns, topic, chunk)
        _mark(dynamodb, alerts_table, chunk, sent, now)
        missing = [signal.alert_id for signal, _ in chunk if signal.alert_id not in sent]
        if missing:
            raise AlertNotPublished(
                f"SNS did not take {len(missing)} alert(s) ({', '.join(missing[:3])}) on {topic}; "
                "their stream records are retried and only unsent alerts go out again"
            )
        for signal, outcome in chunk:
            log.info("%s %s at %s: %s (message %s)", signal.signal, signal.symbol, signal.timestamp,
                     outcome, sent[signal.alert_id])  # fmt: skip
    return outcomes


def deliver(signal: Signal, *, dynamodb: Any, sns: Any, alerts_table: str, topic: str) -> str:
    """Record and publish one signal exactly once; returns published, republished or already_sent."""
    (outcome,) = deliver_all([signal], dynamodb=dynamodb, sns=sns, alerts_table=alerts_table, topic=topic)
    return outcome


# --------------------------------------------------------------------------- the batch


@dataclass
class BatchResult:
    """What one batch did; :meth:`response` is the Lambda partial-batch response."""

    records: int = 0
    malformed: int = 0
    symbols: int = 0
    queries: int = 0
    signals: list[Signal] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    failed_sequence_numbers: list[str] = field(default_factory=list)

    def response(self) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in self.failed_sequence_numbers]}


def _evaluate_symbol(
    symbol: str, group: SymbolBatch, s: Settings, dynamodb: Any, sns: Any, topic: str, result: BatchResult
) -> None:
    """One Query (rarely more) for the window, then every new bar evaluated and its signals delivered."""
    first, last = group.first, group.last
    history, last_state, queries = _history(dynamodb, s.table_name, symbol, first, last, group.bars)
    result.queries += queries
    span = [bar for bar in history if first <= bar[0]]  # every bar of the marked run, from the table
    signals = signals_for_new_bars(history, span, symbol, last_state=last_state)
    outcomes = deliver_all(signals, dynamodb=dynamodb, sns=sns, alerts_table=s.alerts_table_name, topic=topic)
    for outcome in outcomes:
        result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
    result.signals.extend(signals)


def evaluate(
    event: Mapping[str, Any],
    settings: Settings | None = None,
    *,
    dynamodb: Any = None,
    sns: Any = None,
    topic: str | None = None,
) -> BatchResult:
    """Evaluate one DynamoDB stream batch and deliver its signals; see the module docstring."""
    started = time.perf_counter()
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    sns = sns or aws.client("sns", s)
    records = list(event.get("Records") or [])
    groups, malformed = group_stream_records(records)
    result = BatchResult(records=len(records), malformed=malformed, symbols=len(groups))
    arn = topic or (topic_arn(s) if groups else "")
    for symbol, group in sorted(groups.items()):
        try:
            _evaluate_symbol(symbol, group, s, dynamodb, sns, arn, result)
        except (ClientError, BotoCoreError, AlertInProgress, AlertNotPublished) as err:
            # Genuine errors only (botocore already retried): Lambda resumes at this symbol's records.
            log.error(
                "%s: %d record(s) failed and will be retried: %s", symbol, len(group.sequence_numbers), err
            )
            result.failed_sequence_numbers.extend(group.sequence_numbers)
    log.info(
        "trend batch: %d records (%d malformed) over %d symbols, %d Query calls, %d signals %s, "
        "%d records failed, %.0f ms",
        result.records, result.malformed, result.symbols, result.queries, len(result.signals),
        result.outcomes, len(result.failed_sequence_numbers), (time.perf_counter() - started) * 1000,
    )  # fmt: skip
    return result


def evaluate_batch(
    event: Mapping[str, Any],
    settings: Settings | None = None,
    *,
    dynamodb: Any = None,
    sns: Any = None,
    topic: str | None = None,
) -> dict[str, Any]:
    """Evaluate one DynamoDB stream batch; returns ``{"batchItemFailures": [...]}`` for Lambda."""
    return evaluate(event, settings, dynamodb=dynamodb, sns=sns, topic=topic).response()
