"""The trend Lambda's core: DynamoDB stream batches of processed bars -> SMA5/SMA20 crossover alerts.

Lambda-safe (stdlib + boto3). For one stream batch, :func:`evaluate_batch`

1. takes the bars of the INSERT and MODIFY records (REMOVE is ignored), grouped by symbol;
2. per symbol, reads the price window it needs with ONE Query, newest first, ending at the batch's
   newest bar: the batch's own bars, the ``lookback_needed()`` bars before its earliest bar and a
   margin. More pages only when that window shows no non-zero state yet (a flat run: the last
   non-zero state can be arbitrarily old, see :mod:`helpers.core.indicators`) - no per-symbol state to
   keep consistent anywhere;
3. evaluates every bar of the batch with :func:`~helpers.core.indicators.signals_for_new_bars`, the
   shared crossover definition, so a crossover inside a batch is never skipped;
4. delivers each signal exactly once per signal bar (:func:`deliver`):

   * a conditional PutItem (``attribute_not_exists(alert_id)``) records it in the alerts table as
     ``published = false``; only the writer of a new record, or the claimer of a record left
     unpublished by a crash, publishes;
   * SNS Publish (human-readable body, message attributes ``symbol``, ``signal`` and the exact
     values), then UpdateItem ``published = true``;
   * a record already ``published`` is skipped: redelivered batches, retries, MODIFY events of
     evaluated bars and replays publish nothing new.

Only genuine errors (AWS calls failing after botocore's retries) are reported in
``batchItemFailures``: all stream records of the symbol concerned, so Lambda retries from there;
what was already sent is skipped on the retry. Malformed images are logged and skipped.

The window is read from the table, so a batch's bars need not be contiguous or in timestamp order
(they are not: the processor writes a Kinesis batch's items in parallel chunks). What the result
relies on is that, once a bar's stream record is read, the earlier bars of its symbol are in the
table already; a bar landing in the table after a later one was evaluated can change that later
bar's signal, which is not re-evaluated.

The one window left open: a crash after SNS accepted a message but before the record is marked
``published`` re-publishes that alert on the retry (SNS standard topics do not de-duplicate);
consumers can drop repeats by the ``alert_id`` attribute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from helpers.core.indicators import (
    BUY,
    LONG_WINDOW,
    SHORT_WINDOW,
    Bar,
    Signal,
    last_nonzero_state,
    lookback_needed,
    signals_for_new_bars,
)
from helpers.core.quotes import to_decimal, utc_now_timestamp
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "ALERT_ATTRIBUTES",
    "ALREADY_SENT",
    "PUBLISHED",
    "QUERY_MARGIN",
    "REPUBLISHED",
    "AlertInProgress",
    "BatchResult",
    "deliver",
    "evaluate",
    "evaluate_batch",
    "format_alert",
    "topic_arn",
    "topic_arn_for_function",
]

log = logging.getLogger(__name__)

EVALUATED_EVENTS = ("INSERT", "MODIFY")
QUERY_MARGIN = 40  # bars beyond the lookback on the first page, so one Query nearly always suffices
MAX_QUERY_LIMIT = 1000  # cap of the Limit when paging further back through a flat run
ALERT_ATTRIBUTES = ("symbol", "signal", "timestamp", "alert_id", "price", "sma_short", "sma_long")
"""SNS message attributes of an alert (raw SQS delivery carries at most 10)."""
_NUMBER_ATTRIBUTES = ("price", "sma_short", "sma_long")
_CONDITION_FAILED = "ConditionalCheckFailedException"

# Outcomes of deliver()
PUBLISHED, REPUBLISHED, ALREADY_SENT = "published", "republished", "already_sent"


class AlertInProgress(Exception):
    """Another invocation claimed the same unpublished alert a moment ago; retry the record later."""


# --------------------------------------------------------------------------- message


def _plain_number(value: float) -> str:
    """A float as fixed-point text (no exponent), exact to its shortest repr."""
    return format(to_decimal(float(value)), "f")


def format_alert(signal: Signal) -> tuple[str, str]:
    """The alert's SNS ``Subject`` (ASCII, < 100 characters) and human-readable ``Message``."""
    when = signal.timestamp.replace("T", " ").replace("Z", " UTC")
    subject = f"{signal.signal} {signal.symbol} at {signal.price:.2f} - SMA crossover {when}"
    direction = "above" if signal.signal == BUY else "below"
    message = "\n".join(
        [
            f"{signal.signal} signal for {signal.symbol}",
            "",
            f"Bar time (UTC): {signal.timestamp}",
            f"Price:          {signal.price:.4f}",
            f"SMA{SHORT_WINDOW}:           {signal.sma_short:.4f}",
            f"SMA{LONG_WINDOW}:          {signal.sma_long:.4f}",
            "",
            f"SMA{SHORT_WINDOW} crossed {direction} SMA{LONG_WINDOW} at this bar.",
            f"Alert id: {signal.alert_id}",
            "",
            "Sent by the stock trend pipeline. Illustrative signal, not investment advice.",
        ]
    )
    return subject[:99], message


def _message_attributes(signal: Signal) -> dict[str, dict[str, str]]:
    data = signal.to_dict()
    attributes = {}
    for name in ALERT_ATTRIBUTES:
        if name in _NUMBER_ATTRIBUTES:
            attributes[name] = {"DataType": "Number", "StringValue": _plain_number(data[name])}
        else:
            attributes[name] = {"DataType": "String", "StringValue": str(data[name])}
    return attributes


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


# --------------------------------------------------------------------------- stream records


@dataclass
class _SymbolBatch:
    """The new bars of one symbol in a batch and the stream records that carried them."""

    bars: dict[str, Decimal] = field(default_factory=dict)  # timestamp -> price (last image wins)
    sequence_numbers: list[str] = field(default_factory=list)


def _group(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, _SymbolBatch], int]:
    """INSERT/MODIFY bars by symbol; returns them and the number of malformed records skipped."""
    groups: dict[str, _SymbolBatch] = {}
    malformed = 0
    for record in records:
        body = record.get("dynamodb") or {}
        if record.get("eventName") not in EVALUATED_EVENTS:
            continue
        try:
            image = body["NewImage"]
            symbol, timestamp = image["symbol"]["S"], image["timestamp"]["S"]
            price = Decimal(image["price"]["N"])
            if not price.is_finite():
                raise InvalidOperation(str(price))
            sequence = str(body["SequenceNumber"])
        except (KeyError, TypeError, InvalidOperation) as err:
            malformed += 1
            log.warning(
                "skipping stream record %s: its NewImage lacks a valid symbol/timestamp/price (%s: %s); "
                "the processor writes complete items, so this item came from elsewhere",
                record.get("eventID"), type(err).__name__, err,
            )  # fmt: skip
            continue
        group = groups.setdefault(symbol, _SymbolBatch())
        group.bars[timestamp] = price
        group.sequence_numbers.append(sequence)
    return groups, malformed


# --------------------------------------------------------------------------- history window


def _history(
    dynamodb: Any, table: str, symbol: str, first: str, last: str, new_count: int
) -> tuple[list[Bar], int, int]:
    """Bars of ``symbol`` up to ``last`` (ascending) enough to resume before ``first``.

    Returns (bars, last_state, queries): ``last_state`` is the last non-zero state before
    ``first`` when the window had to be bounded, 0 when the window reaches the series' start.
    """
    lookback = lookback_needed()
    limit = new_count + lookback + QUERY_MARGIN
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#s = :s AND #t <= :last",
        "ExpressionAttributeNames": {"#s": "symbol", "#t": "timestamp", "#p": "price"},
        "ExpressionAttributeValues": {":s": {"S": symbol}, ":last": {"S": last}},
        "ProjectionExpression": "#t, #p",
        "ScanIndexForward": False,  # newest first: the window right before the new bars
        "ConsistentRead": True,
    }
    newest_first: list[Bar] = []
    queries = 0
    while True:
        page = dynamodb.query(Limit=limit, **request)
        queries += 1
        newest_first.extend((i["timestamp"]["S"], Decimal(i["price"]["N"])) for i in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start:
            return newest_first[::-1], 0, queries  # the whole prior series
        prior = [bar for bar in newest_first if bar[0] < first]
        if len(prior) >= lookback:
            state = last_nonzero_state(reversed(prior))
            if state is not None:
                return newest_first[::-1], state, queries
        request["ExclusiveStartKey"] = start
        limit = min(2 * limit, MAX_QUERY_LIMIT)


# --------------------------------------------------------------------------- delivery


def _alert_item(signal: Signal, now: str) -> dict[str, Any]:
    return {
        "alert_id": {"S": signal.alert_id},
        "symbol": {"S": signal.symbol},
        "timestamp": {"S": signal.timestamp},
        "signal": {"S": signal.signal},
        **{name: {"N": _plain_number(getattr(signal, name))} for name in _NUMBER_ATTRIBUTES},
        "published": {"BOOL": False},
        "attempts": {"N": "1"},
        "created_at": {"S": now},
    }


def _claim(dynamodb: Any, table: str, signal: Signal, existing: Mapping[str, Any] | None) -> bool:
    """True if this invocation now owns the alert's publication; False if it was already sent."""
    key = {"alert_id": {"S": signal.alert_id}}
    if existing is None:  # older servers do not return the item with the condition failure
        existing = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    if existing is None:
        raise AlertInProgress(f"{signal.alert_id}: the alert record vanished; retry")
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
        if err.response.get("Error", {}).get("Code") == _CONDITION_FAILED:
            raise AlertInProgress(f"{signal.alert_id} is being published by another invocation") from err
        raise
    return True


def deliver(signal: Signal, *, dynamodb: Any, sns: Any, alerts_table: str, topic: str) -> str:
    """Record and publish one signal exactly once; returns published, republished or already_sent."""
    now = utc_now_timestamp()
    outcome = PUBLISHED
    try:
        dynamodb.put_item(
            TableName=alerts_table,
            Item=_alert_item(signal, now),
            ConditionExpression="attribute_not_exists(alert_id)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != _CONDITION_FAILED:
            raise
        if not _claim(dynamodb, alerts_table, signal, err.response.get("Item")):
            return ALREADY_SENT
        outcome = REPUBLISHED
    subject, message = format_alert(signal)
    message_id = sns.publish(
        TopicArn=topic, Subject=subject, Message=message, MessageAttributes=_message_attributes(signal)
    )["MessageId"]
    dynamodb.update_item(
        TableName=alerts_table,
        Key={"alert_id": {"S": signal.alert_id}},
        UpdateExpression="SET published = :true, published_at = :at, sns_message_id = :id",
        ExpressionAttributeValues={
            ":true": {"BOOL": True},
            ":at": {"S": utc_now_timestamp()},
            ":id": {"S": str(message_id)},
        },
    )
    log.info(
        "%s %s at %s: %s (message %s)", signal.signal, signal.symbol, signal.timestamp, outcome, message_id
    )
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
    symbol: str, group: _SymbolBatch, s: Settings, dynamodb: Any, sns: Any, topic: str, result: BatchResult
) -> None:
    """One Query (rarely more) for the window, then every new bar evaluated and its signals delivered."""
    first, last = min(group.bars), max(group.bars)
    history, last_state, queries = _history(dynamodb, s.table_name, symbol, first, last, len(group.bars))
    result.queries += queries
    for signal in signals_for_new_bars(history, sorted(group.bars.items()), symbol, last_state=last_state):
        outcome = deliver(signal, dynamodb=dynamodb, sns=sns, alerts_table=s.alerts_table_name, topic=topic)
        result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
        result.signals.append(signal)


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
    groups, malformed = _group(records)
    result = BatchResult(records=len(records), malformed=malformed, symbols=len(groups))
    arn = topic or (topic_arn(s) if groups else "")
    for symbol, group in sorted(groups.items()):
        try:
            _evaluate_symbol(symbol, group, s, dynamodb, sns, arn, result)
        except (ClientError, BotoCoreError, AlertInProgress) as err:
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
