"""The notebook-side readers without a stack: DynamoDB items to plain values and frames
(helpers.notebook.history, used by verify and alerts), missing resources as ResourceMissingError,
and the waits that return a result on timeout instead of raising.

AWS clients are small stubs answering in the wire shapes botocore returns (typed attributes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from helpers.core.errors import PipelineError, ResourceMissingError
from helpers.notebook import alerts, history, report, verify
from helpers.pipeline import aws
from helpers.pipeline.config import load_settings

SETTINGS = load_settings(environ={}, table_name="unit-processed", alerts_table_name="unit-alerts")


def _item(symbol: str, timestamp: str, price: str, volume: str = "1200") -> dict[str, Any]:
    return {
        "symbol": {"S": symbol},
        "timestamp": {"S": timestamp},
        "price": {"N": price},
        "previous_close": {"N": "186"},
        "volume": {"N": volume},
        "change": {"N": "-0.000001"},
        "source": {"S": "replay"},
    }


def _client_error(code: str, operation: str = "Scan") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "stub"}}, operation)


class _Pages:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def paginate(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        self.calls.append(kwargs)
        return iter(self.pages)


class StubDynamoDB:
    """Scan pages of ``items``; Query pages filtered by the ``:s`` symbol; or ``error`` on every call."""

    def __init__(self, items: list[dict[str, Any]], error: ClientError | None = None) -> None:
        self.items, self.error = items, error

    def get_paginator(self, operation: str) -> Any:
        stub = self

        class Paginator:
            def paginate(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
                if stub.error is not None:
                    raise stub.error
                if operation == "query":
                    symbol = kwargs["ExpressionAttributeValues"][":s"]["S"]
                    return iter([{"Items": [i for i in stub.items if i["symbol"]["S"] == symbol]}])
                if kwargs.get("Select") == "COUNT":
                    return iter([{"Count": len(stub.items)}])
                if "ProjectionExpression" in kwargs:
                    return iter([{"Items": [{"symbol": i["symbol"]} for i in stub.items]}])
                return iter([{"Items": stub.items[:1]}, {"Items": stub.items[1:]}])

        return Paginator()

    def scan(self, **kwargs: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"Items": self.items[: kwargs["Limit"]]}


# --------------------------------------------------------------------------- the one converter


def test_plain_item_gives_floats_and_the_integer_fields_as_int() -> None:
    row = history.plain_item(_item("AAPL", "2026-07-29T13:30:00Z", "187.25"))
    assert row == {
        "symbol": "AAPL",
        "timestamp": "2026-07-29T13:30:00Z",
        "price": 187.25,
        "previous_close": 186.0,
        "volume": 1200,
        "change": -0.000001,
        "source": "replay",
    }
    # An integral price stays a float (a column of prices must not turn int), volume is an int.
    assert type(row["previous_close"]) is float and type(row["volume"]) is int


def test_plain_item_takes_the_integer_fields_of_another_table() -> None:
    item = {
        "alert_id": {"S": "A#t#BUY"},
        "attempts": {"N": "2"},
        "price": {"N": "190"},
        "published": {"BOOL": True},
    }
    row = history.plain_item(item, alerts.ALERT_INTEGER_FIELDS)
    assert row == {"alert_id": "A#t#BUY", "attempts": 2, "price": 190.0, "published": True}
    assert type(row["attempts"]) is int and type(row["price"]) is float


def test_items_frame_sorts_by_symbol_and_timestamp_with_numeric_dtypes() -> None:
    items = [_item("MSFT", "t2", "2.5"), _item("AAPL", "t2", "1.5"), _item("AAPL", "t1", "1")]
    frame = history.items_frame(history.plain_item(i) for i in items)
    assert list(frame[["symbol", "timestamp", "price"]].itertuples(index=False, name=None)) == [
        ("AAPL", "t1", 1.0),
        ("AAPL", "t2", 1.5),
        ("MSFT", "t2", 2.5),
    ]
    assert frame["price"].dtype == float and frame["volume"].dtype == "int64"
    assert list(frame.index) == [0, 1, 2]


def test_items_frame_of_nothing_has_the_key_columns() -> None:
    assert list(history.items_frame([]).columns) == list(history.EMPTY_COLUMNS)


def test_processed_frame_and_sample_items_read_the_same_values() -> None:
    items = [_item("MSFT", "t1", "2.5"), _item("AAPL", "t2", "1.5", "7"), _item("AAPL", "t1", "1")]
    stub = StubDynamoDB(items)
    frame = history.processed_frame(SETTINGS, dynamodb=stub)
    sample = verify.sample_items(SETTINGS, limit=10, dynamodb=stub)
    assert frame.equals(sample)
    assert list(frame["volume"]) == [1200, 7, 1200] and list(frame["price"]) == [1.0, 1.5, 2.5]
    assert history.processed_frame(SETTINGS, ["MSFT"], dynamodb=stub)["symbol"].tolist() == ["MSFT"]
    assert history.processed_bars(SETTINGS, "MSFT", dynamodb=stub) == [("t1", 2.5)]


def test_published_alerts_converts_through_the_same_function() -> None:
    alert = {
        "symbol": {"S": "AAPL"},
        "timestamp": {"S": "t1"},
        "signal": {"S": "BUY"},
        "price": {"N": "190"},
        "attempts": {"N": "1"},
        "published": {"BOOL": False},
    }
    stub = StubDynamoDB([alert, {**alert, "signal": {"S": "SELL"}, "published": {"BOOL": True}}])
    assert [a["signal"] for a in alerts.published_alerts(SETTINGS, dynamodb=stub)] == ["SELL"]
    rows = alerts.published_alerts(SETTINGS, include_unpublished=True, dynamodb=stub)
    assert [(r["signal"], r["attempts"], r["price"]) for r in rows] == [("BUY", 1, 190.0), ("SELL", 1, 190.0)]


# --------------------------------------------------------------------------- missing resources


@pytest.mark.parametrize(
    "read",
    [
        lambda db: history.processed_frame(SETTINGS, dynamodb=db),
        lambda db: history.processed_items(SETTINGS, "AAPL", dynamodb=db),
        lambda db: verify.sample_items(SETTINGS, dynamodb=db),
        lambda db: verify.dynamodb_count(SETTINGS, db),
    ],
)
def test_a_missing_processed_table_says_run_01_provision(read: Any) -> None:
    with pytest.raises(
        ResourceMissingError, match=r"DynamoDB table unit-processed does not exist: run 01_provision"
    ):
        read(StubDynamoDB([], error=_client_error("ResourceNotFoundException")))


def test_a_missing_alerts_table_says_run_01_provision() -> None:
    with pytest.raises(
        ResourceMissingError, match=r"DynamoDB table unit-alerts does not exist: run 01_provision"
    ):
        alerts.published_alerts(
            SETTINGS, dynamodb=StubDynamoDB([], error=_client_error("ResourceNotFoundException"))
        )


def test_other_aws_errors_pass_unchanged() -> None:
    with pytest.raises(ClientError) as caught:
        history.processed_frame(
            SETTINGS, dynamodb=StubDynamoDB([], error=_client_error("AccessDeniedException"))
        )
    assert aws.error_code(caught.value) == "AccessDeniedException"


@pytest.mark.parametrize("code", aws.QUEUE_MISSING_CODES)
def test_a_missing_inbox_queue_says_run_01_provision(code: str) -> None:
    class NoQueue:
        def get_queue_url(self, **kwargs: Any) -> dict[str, Any]:
            raise _client_error(code, "GetQueueUrl")

    with pytest.raises(ResourceMissingError, match=rf"SQS queue {SETTINGS.alert_queue_name} does not exist"):
        alerts.queue_url(SETTINGS, sqs=NoQueue())


@pytest.mark.parametrize("code", aws.BUCKET_MISSING_CODES)
def test_a_missing_bucket_says_run_01_provision(code: str) -> None:
    class NoBucket:
        def get_paginator(self, operation: str) -> Any:
            raise _client_error(code, "ListObjectsV2")

    with pytest.raises(ResourceMissingError, match=rf"S3 bucket {SETTINGS.raw_bucket} does not exist"):
        verify.store_counts(SETTINGS, s3=NoBucket(), dynamodb=StubDynamoDB([]))


# --------------------------------------------------------------------------- waits return on timeout


class EmptyBucket:
    def get_paginator(self, operation: str) -> Any:
        return _Pages([{"Contents": []}])


def test_wait_for_processing_settles_when_two_polls_agree() -> None:
    counts = verify.wait_for_processing(SETTINGS, 0, 5, poll=0, s3=EmptyBucket(), dynamodb=StubDynamoDB([]))
    assert counts["settled"] is True and counts["records_accepted"] == 0 and counts["dynamodb_items"] == 0


def test_wait_for_processing_reports_a_timeout_instead_of_raising() -> None:
    stub = StubDynamoDB([_item("AAPL", "t1", "1")])
    counts = verify.wait_for_processing(SETTINGS, 3, 0.05, poll=0.01, s3=EmptyBucket(), dynamodb=stub)
    assert counts["settled"] is False and counts["records_accepted"] == 0 and counts["dynamodb_items"] == 1


class Inbox:
    """An SQS queue holding ``messages``; each receive returns and hides what is left."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.receives = 0

    def get_queue_url(self, **kwargs: Any) -> dict[str, Any]:
        return {"QueueUrl": "https://sqs.local/inbox"}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives += 1
        n = kwargs["MaxNumberOfMessages"]
        batch, self.messages = self.messages[:n], self.messages[n:]
        return {"Messages": batch}

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {"Successful": kwargs["Entries"]}


def _message(n: int, signal: str = "BUY") -> dict[str, Any]:
    attributes = {"symbol": "AAPL", "timestamp": f"t{n}", "signal": signal, "price": "1.5"}
    return {
        "MessageId": f"m{n}",
        "ReceiptHandle": f"r{n}",
        "Body": f"AAPL {signal}",
        "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    }


def test_wait_for_alerts_returns_what_arrived_on_timeout() -> None:
    inbox = Inbox([_message(1)])
    received = alerts.wait_for_alerts(SETTINGS, 2, timeout=0.05, sqs=inbox)
    assert [a["alert_id"] for a in received] == ["AAPL#t1#BUY"] and inbox.receives >= 2


def test_wait_for_alerts_listens_once_more_after_the_expected_count() -> None:
    inbox = Inbox([_message(1), _message(2, "SELL")])
    received = alerts.wait_for_alerts(SETTINGS, 2, timeout=5, settle_seconds=0, sqs=inbox)
    assert [a["price"] for a in received] == [1.5, 1.5] and inbox.receives == 3
    # one drain (the batch of two, then an empty answer), then the settle drain (empty)


# --------------------------------------------------------------------------- errors a notebook sees


def test_compare_names_what_a_record_lacks() -> None:
    with pytest.raises(PipelineError, match=r"without signal .* pass alerts"):
        alerts.compare([{"symbol": "AAPL", "timestamp": "t1"}], [])
    frame = pd.DataFrame({"symbol": ["AAPL"], "timestamp": ["t1"], "signal": ["BUY"]})
    assert alerts.compare(frame, [{"symbol": "AAPL", "timestamp": "t1", "signal": "BUY"}])["ok"]


def test_a_damaged_summary_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / report.SUMMARY_FILE).write_text("{not json")
    with pytest.raises(PipelineError, match=r"not valid JSON .* delete it"):
        report.read_summary(tmp_path)
    (tmp_path / report.SUMMARY_FILE).write_text(json.dumps([1]))
    with pytest.raises(PipelineError, match=r"holds a list"):
        report.record(tmp_path, x=1)
