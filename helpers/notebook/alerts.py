"""Crossover alerts as delivered: the SQS inbox subscribed to the alert topic, and the alerts table.

The trend Lambda publishes one SNS message per signal (see :mod:`helpers.pipeline.trend`). The queue is
subscribed with raw message delivery, so an SQS message's body is the human-readable alert and
the SNS message attributes arrive as SQS message attributes; an SNS JSON envelope (raw delivery
off) is understood too. The alerts table is the durable record of what was sent, one item per
``alert_id`` with ``published`` true once SNS accepted it.

:func:`wait_for_alerts` returns what arrived when its timeout runs out (compare it with the
expected signals, :func:`compare`); a missing queue or table raises
:class:`~helpers.core.errors.ResourceMissingError` ("run 01_provision first").

**Duplicates.** Alerts are published at least once with a stable ``alert_id`` (see
:mod:`helpers.pipeline.trend`: a crash between Publish and the ``published`` mark re-publishes).
Both readers return each ``alert_id`` once (the first copy to arrive) as :class:`Received`, a
list whose ``duplicates`` counts the extra copies dropped (``duplicate_ids``: which, how many),
within one call. A message SQS delivers again (same ``MessageId``, e.g. read without deleting and
visible again) is the same message, not a duplicate.

**FIFO inbox** (``alerts_fifo``): an SQS FIFO queue hands out the next message of a message group
(a symbol) only once the earlier ones are deleted, so reading without ``delete`` sees at most the
first messages of each symbol until their visibility timeout ends; read a FIFO inbox with
``delete=True``.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from helpers.core.errors import PipelineError
from helpers.core.indicators import LONG_WINDOW, SHORT_WINDOW
from helpers.notebook.history import missing_as_error, plain_item
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "ALERT_INTEGER_FIELDS",
    "DEFAULT_WAIT_SECONDS",
    "DRAIN_DEADLINE_SECONDS",
    "MAX_WAIT_SECONDS",
    "RECEIVE_BATCH",
    "WAIT_TIMEOUT_SECONDS",
    "Received",
    "alerts_table",
    "compare",
    "dedupe",
    "parse_message",
    "published_alerts",
    "queue_url",
    "receive_alerts",
    "wait_for_alerts",
]

log = logging.getLogger(__name__)

RECEIVE_BATCH = 10  # ReceiveMessage / DeleteMessageBatch limit
MAX_WAIT_SECONDS = 20  # longest SQS long poll
DEFAULT_WAIT_SECONDS = 1  # long poll per receive while draining: an empty answer ends the drain
VISIBILITY_TIMEOUT_SECONDS = 60  # how long a received, undeleted message stays hidden
DRAIN_DEADLINE_SECONDS = 300.0  # bound of one drain, should alerts keep coming
WAIT_TIMEOUT_SECONDS = 180.0
SETTLE_SECONDS = 3.0  # after the expected count arrived, wait this long for any extra alert
KEY_FIELDS = ("symbol", "timestamp", "signal")
_NUMBER_FIELDS = ("price", "sma_short", "sma_long")
ALERT_INTEGER_FIELDS = frozenset({"attempts"})
"""Number attributes of an alerts-table item read as int; every other number is a float."""


class _NotArrived(Exception):
    """``aws.wait_until``'s timeout, caught: :func:`wait_for_alerts` returns what arrived instead."""


def _alert_id(data: Mapping[str, Any]) -> str:
    absent = [name for name in KEY_FIELDS if name not in data]
    if absent:
        raise PipelineError(
            f"cannot compare {type(data).__name__} without {', '.join(absent)} (has {sorted(data)}): pass "
            "alerts (receive_alerts, published_alerts), Signal objects or a frame with those columns"
        )
    return f"{data['symbol']}#{data['timestamp']}#{data['signal']}"


class Received(list[dict[str, Any]]):
    """Alerts, one per ``alert_id``; ``duplicate_ids``: the extra copies dropped, per id."""

    def __init__(self, alerts: Iterable[dict[str, Any]] = (), duplicate_ids: Mapping[str, int] | None = None):
        super().__init__(alerts)
        self.duplicate_ids: dict[str, int] = dict(duplicate_ids or {})

    @property
    def duplicates(self) -> int:
        """How many copies were dropped because their ``alert_id`` had been received already."""
        return sum(self.duplicate_ids.values())


def dedupe(alerts: Iterable[dict[str, Any]]) -> Received:
    """The first alert of each ``alert_id``, in order; the later copies are counted, not returned."""
    kept: dict[str, dict[str, Any]] = {}
    extra: Counter[str] = Counter()
    for alert in alerts:
        if alert["alert_id"] in kept:
            extra[alert["alert_id"]] += 1
        else:
            kept[alert["alert_id"]] = alert
    if extra:
        log.warning("dropped %d duplicate alert(s) of %d alert id(s)", sum(extra.values()), len(extra))
    return Received(kept.values(), extra)


# --------------------------------------------------------------------------- SQS inbox


def queue_url(settings: Settings | None = None, *, sqs: Any = None) -> str:
    """URL of the alert inbox queue."""
    s = settings or load_settings()
    sqs = sqs or aws.client("sqs", s)
    with missing_as_error(f"SQS queue {s.alert_queue_name}", *aws.QUEUE_MISSING_CODES):
        return str(sqs.get_queue_url(QueueName=s.alert_queue_name)["QueueUrl"])


def parse_message(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """An SQS message of the inbox as an alert dict; None if it is not an alert.

    Keys: alert_id, symbol, timestamp, signal, price, sma_short, sma_long (floats), subject,
    body (the human-readable text), message_id (SQS), sent_at (UTC, when SQS got it).
    """
    body = str(message.get("Body", ""))
    values = {k: v.get("StringValue") for k, v in (message.get("MessageAttributes") or {}).items()}
    subject = None
    if "symbol" not in values and body.lstrip().startswith("{"):  # SNS envelope: raw delivery off
        try:
            envelope = json.loads(body)
        except ValueError:
            envelope = {}
        if isinstance(envelope, dict) and envelope.get("Type") == "Notification":
            values = {k: v.get("Value") for k, v in (envelope.get("MessageAttributes") or {}).items()}
            body, subject = str(envelope.get("Message", "")), envelope.get("Subject")
    if any(not values.get(name) for name in KEY_FIELDS):
        return None
    alert: dict[str, Any] = {name: str(values[name]) for name in KEY_FIELDS}
    alert["alert_id"] = values.get("alert_id") or _alert_id(alert)
    for name in _NUMBER_FIELDS:
        alert[name] = float(values[name]) if values.get(name) is not None else float("nan")
    sent = (message.get("Attributes") or {}).get("SentTimestamp")
    alert.update(subject=subject, body=body, message_id=message.get("MessageId"), sent_at=_utc_millis(sent))
    return alert


def _utc_millis(epoch_ms: str | None) -> str | None:
    if not epoch_ms:
        return None
    moment = datetime.fromtimestamp(int(epoch_ms) / 1000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def receive_alerts(
    settings: Settings | None = None,
    *,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    max_messages: int | None = None,
    delete: bool = True,
    visibility_timeout: int = VISIBILITY_TIMEOUT_SECONDS,
    deadline_seconds: float = DRAIN_DEADLINE_SECONDS,
    sqs: Any = None,
) -> Received:
    """Drain the inbox: receive (10 at a time, long polls of ``wait_seconds``) until it is empty.

    Returns the alerts (see :func:`parse_message`) in arrival order, each ``alert_id`` once
    (``duplicates``: copies dropped, see the module docstring). With ``delete`` every alert read,
    copies included, is deleted; without it they reappear after ``visibility_timeout`` seconds (a
    later drain sees them again). Messages that are not alerts are logged and left in the queue.
    """
    s = settings or load_settings()
    messages = _drain(s, wait_seconds, max_messages, delete, visibility_timeout, deadline_seconds, sqs)
    return dedupe(messages.values())


def _drain(
    s: Settings,
    wait_seconds: float,
    max_messages: int | None,
    delete: bool,
    visibility_timeout: int,
    deadline_seconds: float,
    sqs: Any,
) -> dict[str, dict[str, Any]]:
    """Every alert message received, by SQS message id, in arrival order."""
    sqs = sqs or aws.client("sqs", s)
    url = queue_url(s, sqs=sqs)
    wait = max(0, min(MAX_WAIT_SECONDS, round(wait_seconds)))
    deadline = time.monotonic() + deadline_seconds
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        wanted = RECEIVE_BATCH if max_messages is None else min(RECEIVE_BATCH, max_messages - len(found))
        if wanted <= 0:
            break
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=wanted,
            WaitTimeSeconds=wait,
            VisibilityTimeout=visibility_timeout,
            MessageAttributeNames=["All"],
            AttributeNames=["SentTimestamp"],
        ).get("Messages", [])
        if not messages:
            break
        done: list[dict[str, str]] = []
        for message in messages:
            alert = parse_message(message)
            if alert is None:
                log.warning("%s: message %s is not an alert; left in the queue", s.alert_queue_name,
                            message.get("MessageId"))  # fmt: skip
                continue
            found.setdefault(str(message["MessageId"]), alert)
            done.append({"Id": str(len(done)), "ReceiptHandle": message["ReceiptHandle"]})
        if delete and done:
            failed = sqs.delete_message_batch(QueueUrl=url, Entries=done).get("Failed", [])
            if failed:
                log.warning(
                    "%s: %d alert(s) could not be deleted: %s", s.alert_queue_name, len(failed), failed
                )
    log.info("received %d alert message(s) from %s", len(found), s.alert_queue_name)
    return found


def wait_for_alerts(
    settings: Settings | None,
    expected_count: int,
    timeout: float = WAIT_TIMEOUT_SECONDS,
    *,
    symbols: Iterable[str] | None = None,
    settle_seconds: float = SETTLE_SECONDS,
    delete: bool = True,
    sqs: Any = None,
) -> Received:
    """Receive alerts until ``expected_count`` distinct ones (of ``symbols``, default all) arrived.

    Or until ``timeout``. Once the count is reached it keeps listening ``settle_seconds`` for any
    extra alert, so a surplus shows up in the result rather than staying in the queue. Each SQS
    message is taken once (by message id), each ``alert_id`` returned once (``duplicates``: the
    copies dropped); alerts of other symbols are dropped from the result. Never raises on
    timeout: compare the result with the expected alerts (:func:`compare`).
    """
    s = settings or load_settings()
    sqs = sqs or aws.client("sqs", s)
    url = queue_url(s, sqs=sqs)  # a missing queue raises now, not after the timeout
    wanted = None if symbols is None else set(symbols)
    found: dict[str, dict[str, Any]] = {}

    def drain(wait: float) -> None:
        for message_id, alert in _drain(s, wait, None, delete, VISIBILITY_TIMEOUT_SECONDS,
                                        DRAIN_DEADLINE_SECONDS, sqs).items():  # fmt: skip
            if wanted is None or alert["symbol"] in wanted:
                found.setdefault(message_id, alert)

    def distinct() -> int:
        return len({alert["alert_id"] for alert in found.values()})

    def arrived() -> bool:
        if distinct() < expected_count:
            drain(DEFAULT_WAIT_SECONDS)  # each drain ends at its first empty long poll: no sleep needed
        return distinct() >= expected_count

    try:
        aws.wait_until(arrived, f"{expected_count} alerts", timeout, poll=0, error=_NotArrived)
    except _NotArrived:
        log.warning(
            "only %d of %d alerts arrived within %.0f s at %s", distinct(), expected_count, timeout, url
        )
    else:
        drain(settle_seconds)
    unique = dedupe(found.values())
    ordered = sorted(unique, key=lambda a: (a["symbol"], a["timestamp"], a["signal"]))
    return Received(ordered, unique.duplicate_ids)


# --------------------------------------------------------------------------- alerts table


def published_alerts(
    settings: Settings | None = None, *, include_unpublished: bool = False, dynamodb: Any = None
) -> list[dict[str, Any]]:
    """The alerts table (Scan): what the trend Lambda recorded as sent, by symbol and timestamp.

    Numbers as float; ``published`` is False only for a record whose Publish has not completed
    (returned with ``include_unpublished``).
    """
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    rows: list[dict[str, Any]] = []
    with missing_as_error(f"DynamoDB table {s.alerts_table_name}"):
        for page in dynamodb.get_paginator("scan").paginate(TableName=s.alerts_table_name):
            rows.extend(plain_item(item, ALERT_INTEGER_FIELDS) for item in page.get("Items", []))
    if not include_unpublished:
        rows = [row for row in rows if row.get("published")]
    return sorted(rows, key=lambda r: (r["symbol"], r["timestamp"], r["signal"]))


# --------------------------------------------------------------------------- checks and tables


def _records(items: Any) -> list[Mapping[str, Any]]:
    """Alert dicts, Signal objects or a DataFrame (e.g. ``analysis.signals_frame``) as mappings."""
    if hasattr(items, "columns") and hasattr(items, "to_dict"):
        return list(items.to_dict("records"))
    return [item.to_dict() if hasattr(item, "to_dict") else item for item in items]


def compare(received: Any, expected: Any) -> dict[str, Any]:
    """Received alerts against the expected signals, by (symbol, timestamp, signal).

    Returns ``ok`` (same set, no repeats), the counts, and the ``missing``, ``extra`` and
    ``duplicates`` alert ids.
    """
    got = Counter(_alert_id(r) for r in _records(received))
    want = Counter(_alert_id(r) for r in _records(expected))
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    duplicates = sorted(k for k, n in got.items() if n > 1)
    return {
        "ok": not (missing or extra or duplicates),
        "received": sum(got.values()),
        "expected": sum(want.values()),
        "missing": missing,
        "extra": extra,
        "duplicates": duplicates,
    }


def alerts_table(alerts: Any) -> pd.DataFrame:
    """Alerts as a DataFrame for reports: symbol, bar time, signal, price, SMA5, SMA20 (+ sent at)."""
    frame = pd.DataFrame(_records(alerts))
    columns = ["symbol", "timestamp", "signal", "price", "sma_short", "sma_long", "sent_at"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame[[c for c in columns if c in frame.columns]]
    frame = frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
    return frame.rename(
        columns={
            "timestamp": "bar time (UTC)",
            "sma_short": f"SMA{SHORT_WINDOW}",
            "sma_long": f"SMA{LONG_WINDOW}",
        }
    )
