"""The trend Lambda's pure rules: stream records -> per-symbol bars, the history window, the alert.

Standard library only; :mod:`helpers.pipeline.trend` does the Query, PutItem and Publish calls.

* :func:`group_stream_records`: the spans to evaluate, by symbol, from the *marked* records of a
  DynamoDB stream batch (:func:`mark_request`), and the count of malformed images;
* :func:`window_request`, :func:`first_limit`, :func:`window_state`: the one Query that reads a
  symbol's price window newest first, and whether the bars read so far suffice to resume the
  crossover state before the batch's earliest bar (else :func:`next_limit` pages further back
  through a flat run);
* :func:`format_alert`, :func:`message_attributes`, :func:`publish_request`, :func:`alert_item`:
  the SNS message (its Publish arguments, FIFO ones included) and the alerts-table record of a
  :class:`~helpers.core.indicators.Signal`.

**Marks.** The processor writes a Kinesis batch's items per symbol in timestamp order, and
BatchWriteItem may store a chunk's later items while returning an earlier one unprocessed: a
bar's stream record can arrive while an earlier bar is still missing from the table. So the
trend Lambda does not evaluate bars as their records arrive. Once a symbol's items are in the
table without a gap, the processor marks the last one (:func:`mark_request`: ``trend_from``, the
first bar of the gap-free run, and ``trend_bars``, its length); that MODIFY record is what the
trend Lambda evaluates: every bar of the symbol in ``[trend_from, marked bar]``, read from the
table. Unmarked records (the item writes themselves, rewrites by retries) are skipped, so every
bar is evaluated only with all earlier bars present, whatever the order the items landed in.
Runs overlap after retries; evaluation is idempotent (alerts are recorded by ``alert_id``).

On an SNS FIFO topic (name ending in ``.fifo``) Publish needs ``MessageGroupId`` -- the symbol, so
a symbol's alerts keep their order and symbols do not hold each other up -- and a
``MessageDeduplicationId``: the ``alert_id`` (at most 128 characters of letters, digits and
punctuation: ``SYMBOL#timestamp#SIGNAL`` is at most 41 of them, a symbol being 1-15), stable
across re-publications, so SNS drops a repeat within its 5-minute deduplication window.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from helpers.core.indicators import (
    BUY,
    LONG_WINDOW,
    SHORT_WINDOW,
    Bar,
    Signal,
    last_nonzero_state,
    lookback_needed,
)
from helpers.core.quotes import to_decimal

__all__ = [
    "ALERT_ATTRIBUTES",
    "EVALUATED_EVENTS",
    "FIFO_TOPIC_SUFFIX",
    "MAX_DEDUPLICATION_ID_CHARS",
    "MAX_QUERY_LIMIT",
    "NUMBER_ATTRIBUTES",
    "QUERY_MARGIN",
    "TREND_BARS",
    "TREND_FROM",
    "SymbolBatch",
    "alert_item",
    "first_limit",
    "format_alert",
    "group_stream_records",
    "mark_request",
    "message_attributes",
    "next_limit",
    "plain_number",
    "publish_request",
    "window_bars",
    "window_request",
    "window_state",
]

log = logging.getLogger(__name__)

EVALUATED_EVENTS = ("INSERT", "MODIFY")
TREND_FROM = "trend_from"  # on a marked item: the first bar of the gap-free run it ends
TREND_BARS = "trend_bars"  # on a marked item: the run's length
QUERY_MARGIN = 40  # bars beyond the lookback on the first page, so one Query nearly always suffices
MAX_QUERY_LIMIT = 1000  # cap of the Limit when paging further back through a flat run
ALERT_ATTRIBUTES = ("symbol", "signal", "timestamp", "alert_id", "price", "sma_short", "sma_long")
"""SNS message attributes of an alert (raw SQS delivery carries at most 10)."""
NUMBER_ATTRIBUTES = ("price", "sma_short", "sma_long")
FIFO_TOPIC_SUFFIX = ".fifo"  # an SNS FIFO topic's name (and ARN) ends with it
MAX_DEDUPLICATION_ID_CHARS = 128  # MessageDeduplicationId / MessageGroupId limit


# --------------------------------------------------------------------------- stream records


@dataclass
class SymbolBatch:
    """The span of one symbol's bars to evaluate, from a batch's marks, and the records carrying them."""

    first: str = ""  # earliest ``trend_from`` of the marks
    last: str = ""  # latest marked bar
    bars: int = 0  # sum of the marks' ``trend_bars``: sizes the first Query page
    sequence_numbers: list[str] = field(default_factory=list)

    def add(self, first: str, last: str, bars: int, sequence: str) -> None:
        self.first = min(self.first, first) if self.first else first
        self.last = max(self.last, last)
        self.bars += bars
        self.sequence_numbers.append(sequence)


def mark_request(table: str, key: Mapping[str, Any], first: str, bars: int) -> dict[str, Any]:
    """UpdateItem parameters marking ``key`` as the end of a gap-free run starting at ``first``.

    Conditional on the item existing, so a mark never creates a bare item.
    """
    return {
        "TableName": table,
        "Key": {"symbol": key["symbol"], "timestamp": key["timestamp"]},
        "UpdateExpression": "SET #f = :f, #n = :n",
        "ConditionExpression": "attribute_exists(#p)",
        "ExpressionAttributeNames": {"#f": TREND_FROM, "#n": TREND_BARS, "#p": "price"},
        "ExpressionAttributeValues": {":f": {"S": first}, ":n": {"N": str(bars)}},
    }


def group_stream_records(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, SymbolBatch], int]:
    """The spans to evaluate by symbol, from the marked INSERT/MODIFY records; and how many were malformed.

    REMOVE and unmarked records are skipped; a marked image without a valid symbol, timestamp,
    finite price, ``trend_from`` <= timestamp or a sequence number is malformed (logged,
    counted, skipped).
    """
    groups: dict[str, SymbolBatch] = {}
    malformed = 0
    for record in records:
        body = record.get("dynamodb") or {}
        if record.get("eventName") not in EVALUATED_EVENTS:
            continue
        image = body.get("NewImage") or {}
        if TREND_FROM not in image:
            continue
        try:
            symbol, timestamp = image["symbol"]["S"], image["timestamp"]["S"]
            price = Decimal(image["price"]["N"])
            first, bars = image[TREND_FROM]["S"], int(image.get(TREND_BARS, {"N": "1"})["N"])
            if not price.is_finite() or first > timestamp:
                raise InvalidOperation(f"price {price}, {TREND_FROM} {first}")
            sequence = str(body["SequenceNumber"])
        except (KeyError, TypeError, ValueError, InvalidOperation) as err:
            malformed += 1
            log.warning(
                "skipping stream record %s: its NewImage lacks a valid symbol/timestamp/price (%s: %s); "
                "the processor writes complete items, so this item came from elsewhere",
                record.get("eventID"), type(err).__name__, err,
            )  # fmt: skip
            continue
        groups.setdefault(symbol, SymbolBatch()).add(first, timestamp, bars, sequence)
    return groups, malformed


# --------------------------------------------------------------------------- history window


def window_request(table: str, symbol: str, last: str) -> dict[str, Any]:
    """Query parameters (without ``Limit``) of ``symbol``'s bars up to ``last``, newest first."""
    return {
        "TableName": table,
        "KeyConditionExpression": "#s = :s AND #t <= :last",
        "ExpressionAttributeNames": {"#s": "symbol", "#t": "timestamp", "#p": "price"},
        "ExpressionAttributeValues": {":s": {"S": symbol}, ":last": {"S": last}},
        "ProjectionExpression": "#t, #p",
        "ScanIndexForward": False,  # newest first: the window right before the new bars
        "ConsistentRead": True,
    }


def first_limit(new_count: int) -> int:
    """``Limit`` of the first page: the new bars, the lookback before them and a margin."""
    return new_count + lookback_needed() + QUERY_MARGIN


def next_limit(limit: int) -> int:
    """``Limit`` of the next page through a flat run: doubled, capped."""
    return min(2 * limit, MAX_QUERY_LIMIT)


def window_bars(items: Iterable[Mapping[str, Any]]) -> list[Bar]:
    """The ``(timestamp, price)`` bars of a Query page's items, in page order."""
    return [(i["timestamp"]["S"], Decimal(i["price"]["N"])) for i in items]


def window_state(newest_first: list[Bar], first: str) -> int | None:
    """The last non-zero crossover state before ``first``, if the bars read (newest first) show one.

    ``None`` means read further back: fewer than the lookback bars before ``first``, or only
    state 0 (a flat run) among them.
    """
    prior = [bar for bar in newest_first if bar[0] < first]
    if len(prior) < lookback_needed():
        return None
    return last_nonzero_state(reversed(prior))


# --------------------------------------------------------------------------- the alert


def plain_number(value: float) -> str:
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


def message_attributes(signal: Signal) -> dict[str, dict[str, str]]:
    """The SNS message attributes of an alert: :data:`ALERT_ATTRIBUTES`, numbers without exponent."""
    data = signal.to_dict()
    attributes = {}
    for name in ALERT_ATTRIBUTES:
        if name in NUMBER_ATTRIBUTES:
            attributes[name] = {"DataType": "Number", "StringValue": plain_number(data[name])}
        else:
            attributes[name] = {"DataType": "String", "StringValue": str(data[name])}
    return attributes


def publish_request(signal: Signal, topic: str) -> dict[str, Any]:
    """SNS Publish arguments of an alert on ``topic`` (an ARN); FIFO topics get group and dedup ids."""
    subject, message = format_alert(signal)
    request: dict[str, Any] = {
        "TopicArn": topic,
        "Subject": subject,
        "Message": message,
        "MessageAttributes": message_attributes(signal),
    }
    if topic.endswith(FIFO_TOPIC_SUFFIX):
        request.update(MessageGroupId=signal.symbol, MessageDeduplicationId=signal.alert_id)
    return request


def alert_item(signal: Signal, now: str) -> dict[str, Any]:
    """The alerts-table record of a signal, first written unpublished with one attempt."""
    return {
        "alert_id": {"S": signal.alert_id},
        "symbol": {"S": signal.symbol},
        "timestamp": {"S": signal.timestamp},
        "signal": {"S": signal.signal},
        **{name: {"N": plain_number(getattr(signal, name))} for name in NUMBER_ATTRIBUTES},
        "published": {"BOOL": False},
        "attempts": {"N": "1"},
        "created_at": {"S": now},
    }
