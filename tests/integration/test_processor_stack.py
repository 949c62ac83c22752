"""The processor Lambda's batch logic, driven directly against the local stack.

Every test gets a fresh table and bucket, so counts are exact; stores are read back with the
same helpers the verify notebook uses (:mod:`helpers.notebook.verify`). The planning rules
alone (keys, grouping, cutoffs, manifests, trims) are unit-tested in tests/unit/test_processor.py.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deploy.provision import PROCESSED_KEY_SCHEMA
from helpers.core.layout import checkpoint_key, raw_partition
from helpers.core.quotes import Quote
from helpers.notebook import verify
from helpers.notebook.producer import malformed_records
from helpers.notebook.sources import synthetic
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings
from helpers.pipeline.processor import manifest_key, process_batch, quarantine_key, raw_key

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parent.parent / "events"
SHARD = "shardId-000000000000"
NOW = "2026-07-29T14:00:00Z"


# --------------------------------------------------------------------------- helpers


def kinesis_event(entries: Iterable[tuple[int, bytes, str]], shard: str = SHARD) -> dict[str, Any]:
    """A Kinesis Lambda event of ``(sequence number, data, partition key)`` records."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": str(seq),
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": 1785331801.5,  # 2026-07-29
                },
                "eventSource": "aws:kinesis",
                "eventID": f"{shard}:{seq}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/test",
            }
            for seq, data, key in entries
        ]
    }


def quotes_event(quotes: Iterable[Quote], first_seq: int = 1) -> dict[str, Any]:
    return kinesis_event((first_seq + i, q.to_json(), q.symbol) for i, q in enumerate(quotes))


def objects(s: Settings) -> dict[str, str]:
    """Every object of the bucket: key -> ETag (content hash)."""
    s3 = aws.client("s3", s)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=s.raw_bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def lines(s: Settings, key: str) -> list[dict[str, Any]]:
    body = aws.client("s3", s).get_object(Bucket=s.raw_bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def raw_lines(s: Settings) -> list[dict[str, Any]]:
    return [row for key in objects(s) if key.startswith("raw/") for row in lines(s, key)]


class Wrapped:
    """A real client with some methods replaced (fault injection)."""

    def __init__(self, inner: Any, **overrides: Any) -> None:
        self._inner = inner
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "injected"}}, operation)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base(local_stack: Settings) -> Settings:
    """Provisioned resources of this module's own names (Glue table included)."""
    from deploy.provision import provision

    names = {  # every resource name of its own: other modules share the session's stack
        field: f"proc-test-{field.replace('_', '-')}"
        for field in (
            "stream_name", "table_name", "alerts_table_name", "raw_bucket", "results_bucket", "topic_name",
            "alert_queue_name", "failure_queue_name", "athena_workgroup", "processor_function",
            "trend_function", "processor_role", "trend_role",
        )
    }  # fmt: skip
    s = load_settings(
        environ={},
        local_port=local_stack.local_port,
        state_dir=local_stack.state_dir,
        glue_database="proc_test",
        **names,
    )
    provision(s)
    return s


@pytest.fixture
def store(base: Settings, request: pytest.FixtureRequest) -> Settings:
    """A fresh, empty table and bucket for one test."""
    name = "proc-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    s = load_settings(**{**base.to_dict(), "endpoint_url": None, "table_name": name, "raw_bucket": name})
    aws.client("s3", s).create_bucket(Bucket=name)
    aws.client("dynamodb", s).create_table(
        TableName=name,
        **PROCESSED_KEY_SCHEMA,
        BillingMode="PAY_PER_REQUEST",
    )
    return s


@pytest.fixture
def handler(store: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The deployed handler, with the Lambda environment pointing at this test's store."""
    from lambda_src import processor as handler_module

    for key, value in store.lambda_environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(store.resolved_endpoint))
    handler_module._clients.cache_clear()
    yield handler_module.handler
    handler_module._clients.cache_clear()


# --------------------------------------------------------------------------- against the stack


def test_sample_event_stores_valid_records_and_quarantines_the_bad_symbol(store: Settings) -> None:
    event = json.loads((EVENTS / "kinesis_batch.json").read_text())
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]

    assert process_batch(event, store, now=NOW) == {"batchItemFailures": []}

    aapl = raw_key(store, "AAPL", "2026", SHARD, seqs[0])
    msft = raw_key(store, "MSFT", "2026", SHARD, seqs[2])
    quarantine = quarantine_key(store, "2026-07-29", SHARD, seqs[3])
    manifest = manifest_key(SHARD, seqs[0])
    assert set(objects(store)) == {aapl, msft, quarantine, manifest, checkpoint_key(SHARD)}
    assert [row["timestamp"] for row in lines(store, aapl)] == [
        "2026-07-29T13:30:00Z",
        "2026-07-29T13:31:00Z",
    ]
    (bad,) = lines(store, quarantine)
    assert bad["reason"] == "invalid_symbol" and bad["sequence_number"] == seqs[3]
    assert "\\u200b" in bad["detail"] and bad["shard"] == SHARD and bad["arrival"] == "2026-07-29T13:31:02Z"
    assert lines(store, manifest) == [
        {
            "shard": SHARD,
            "first_sequence_number": seqs[0],
            "last_committed_sequence_number": seqs[3],
            "accepted": seqs[:3],
            "quarantined": {seqs[3]: "invalid_symbol"},
            "parked": {},
        }
    ]
    item = aws.client("dynamodb", store).get_item(
        TableName=store.table_name, Key={"symbol": {"S": "MSFT"}, "timestamp": {"S": "2026-07-29T13:30:00Z"}}
    )["Item"]
    assert item["change"] == {"N": "-2.25"} and item["change_pct"] == {"N": "-0.5455"}
    assert item["processed_at"] == {"S": NOW} and item["price"] == {"N": "410.25"}


def test_mixed_batch_stores_every_valid_record_and_quarantines_every_invalid_one(store: Settings) -> None:
    # GIVEN valid quotes interleaved with malformed records (bad JSON, non-UTF-8, NaN/negative/
    # boolean price, missing field, U+200B and trailing space in the symbol)
    valid = list(synthetic(["AAA", "BBB"], 12))
    bad = malformed_records()
    entries: list[tuple[int, bytes, str]] = []
    expected_reasons: dict[str, str] = {}
    for i, quote in enumerate(valid):
        entries.append((len(entries) + 1, quote.to_json(), quote.symbol))
        if i < len(bad):
            reason, data = bad[i]
            entries.append((len(entries) + 1, data, "BAD"))
            expected_reasons[str(len(entries))] = reason
    # WHEN the batch is processed
    assert process_batch(kinesis_event(entries), store, now=NOW) == {"batchItemFailures": []}
    # THEN every valid record is stored once and every invalid one is quarantined with its reason
    counts = verify.store_counts(store)
    assert counts["records_accepted"] == counts["dynamodb_items"] == counts["raw_records"] == len(valid)
    assert counts["records_quarantined"] == {
        "bad_json": 1, "invalid_price": 3, "invalid_symbol": 2, "missing_field": 1, "not_utf8": 1,
    }  # fmt: skip
    quarantined = verify.quarantined_records(store)
    assert dict(zip(quarantined["sequence_number"], quarantined["reason"], strict=True)) == expected_reasons
    assert sorted(row["timestamp"] + row["symbol"] for row in raw_lines(store)) == sorted(
        q.timestamp + q.symbol for q in valid
    )


def test_redelivery_through_the_handler_changes_no_count_and_adds_no_object(
    store: Settings, handler: Any
) -> None:
    event = quotes_event(synthetic(["AAA", "BBB", "CCC"], 90))
    event["Records"] += kinesis_event([(91, b"not json", "BAD")])["Records"]

    assert handler(event, None) == {"batchItemFailures": []}
    first_objects, first_counts = objects(store), verify.store_counts(store)
    assert handler(event, None) == {"batchItemFailures": []}  # the same batch, redelivered

    assert objects(store) == first_objects  # same keys, same content
    assert verify.store_counts(store) == first_counts
    assert first_counts["records_accepted"] == first_counts["dynamodb_items"] == 90
    assert first_counts["raw_records"] == 90 and first_counts["records_quarantined"] == {"bad_json": 1}


def test_partial_failure_commits_the_prefix_and_the_retry_adds_no_duplicate(store: Settings) -> None:
    # GIVEN 40 quotes alternating AAA/BBB (seq 1-40), then 5 CCC quotes (41-45) and a bad record (46);
    # one bad record early (seq 10) and DynamoDB refusing the item of seq 21 (an AAA quote)
    quotes = list(synthetic(["AAA", "BBB"], 40)) + list(synthetic(["CCC"], 5))
    entries = [(i + 1, q.to_json(), q.symbol) for i, q in enumerate(quotes)]
    entries[9] = (10, b"\xff bad", "BAD")
    entries.append((46, b"{}", "BAD"))
    poison = (quotes[20].symbol, quotes[20].timestamp)
    real = aws.client("dynamodb", store)

    def refusing(RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        keep, refuse = [], []
        for request in requests:
            item = request["PutRequest"]["Item"]
            (refuse if (item["symbol"]["S"], item["timestamp"]["S"]) == poison else keep).append(request)
        if keep:
            real.batch_write_item(RequestItems={table: keep})
        return {"UnprocessedItems": {table: refuse} if refuse else {}}

    event = kinesis_event(entries)
    response = process_batch(
        event, store, dynamodb=Wrapped(real, batch_write_item=refusing), sleep=lambda _: None
    )

    # THEN the refused record and AAA's later bars (held behind it: a symbol's items never skip a
    # gap) are reported, and the stores hold exactly the records below it
    assert response == {"batchItemFailures": [{"itemIdentifier": str(n)} for n in range(21, 40, 2)]}
    aaa, bbb, ccc = (raw_key(store, *raw_partition(sym, quotes[0].timestamp), SHARD, seq) for sym, seq in
                     (("AAA", "1"), ("BBB", "2"), ("CCC", "41")))  # fmt: skip
    keys = objects(store)
    assert ccc not in keys  # a group entirely above the failure is deleted
    assert [r["timestamp"] for r in lines(store, aaa)] == [q.timestamp for q in quotes[0:20:2]]
    assert [r["timestamp"] for r in lines(store, bbb)] == [
        q.timestamp for q in quotes[1:20:2] if q is not quotes[9]
    ]
    assert len(lines(store, quarantine_key(store, "2026-07-29", SHARD, "10"))) == 1  # 46 cut off
    counts = verify.store_counts(store)
    assert counts["records_accepted"] == counts["raw_records"] == 19
    assert counts["records_quarantined"] == {"not_utf8": 1}

    # WHEN Lambda retries from the failed sequence number with a healthy table
    retry = kinesis_event(e for e in entries if e[0] >= 21)
    assert process_batch(retry, store) == {"batchItemFailures": []}

    # THEN every record is stored exactly once
    counts = verify.store_counts(store)
    assert counts["records_accepted"] == counts["raw_records"] == counts["dynamodb_items"] == 44
    assert counts["records_quarantined"] == {"not_utf8": 1, "missing_field": 1}
    rows = raw_lines(store)
    assert len({(r["symbol"], r["timestamp"]) for r in rows}) == len(rows) == 44
    year = quotes[0].timestamp[:4]
    assert {ccc, raw_key(store, "AAA", year, SHARD, "21"), raw_key(store, "BBB", year, SHARD, "22")} <= set(
        objects(store)
    )


def test_s3_failure_fails_only_that_partitions_records(store: Settings) -> None:
    real = aws.client("s3", store)

    def put_object(**kwargs: Any) -> Any:
        if "symbol=BBB/" in kwargs["Key"]:
            raise _error("SlowDown", "PutObject")
        return real.put_object(**kwargs)

    quotes = list(synthetic(["AAA", "BBB"], 10))
    response = process_batch(quotes_event(quotes), store, s3=Wrapped(real, put_object=put_object))

    assert response == {"batchItemFailures": [{"itemIdentifier": str(n)} for n in (2, 4, 6, 8, 10)]}
    (aaa,) = [k for k in objects(store) if k.startswith("raw/")]
    assert len(lines(store, aaa)) == 1  # AAA seq 1 is below the lowest failure (2); 3, 5... are retried
    assert verify.store_counts(store)["records_accepted"] == 1


def test_unprocessed_items_are_retried_until_written(store: Settings) -> None:
    real = aws.client("dynamodb", store)
    calls: list[int] = []

    def flaky(RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        calls.append(len(requests))
        if len(calls) <= 2:  # the first two calls write half and hand back the rest
            half = len(requests) // 2
            real.batch_write_item(RequestItems={table: requests[:half]})
            return {"UnprocessedItems": {table: requests[half:]}}
        return real.batch_write_item(RequestItems=RequestItems)

    sleeps: list[float] = []
    event = quotes_event(synthetic(["AAA"], 30))
    response = process_batch(
        event, store, dynamodb=Wrapped(real, batch_write_item=flaky), sleep=sleeps.append
    )

    assert response == {"batchItemFailures": []}
    assert verify.dynamodb_count(store) == 30 and max(calls) <= 25 and len(calls) >= 4
    assert sleeps and all(0 <= s <= 1.0 for s in sleeps)


def test_each_symbol_is_written_in_time_order_and_stops_at_its_first_failed_chunk(store: Settings) -> None:
    # GIVEN 60 AAA quotes (chunks of 25, 25, 10) interleaved with 30 BBB quotes, shuffled in the batch,
    # and a table that refuses the second AAA chunk
    quotes = list(synthetic(["AAA"], 60)) + list(synthetic(["BBB"], 30))
    order = sorted(range(len(quotes)), key=lambda i: (i * 37) % len(quotes))
    entries = [(n + 1, quotes[i].to_json(), quotes[i].symbol) for n, i in enumerate(order)]
    real = aws.client("dynamodb", store)
    written: dict[str, list[str]] = {"AAA": [], "BBB": []}
    aaa_calls: list[int] = []

    def recording(RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((_table, requests),) = RequestItems.items()
        items = [r["PutRequest"]["Item"] for r in requests]
        (symbol,) = {i["symbol"]["S"] for i in items}  # one symbol per request
        if symbol == "AAA":
            aaa_calls.append(len(items))
            if len(aaa_calls) == 2:
                raise _error("InternalServerError", "BatchWriteItem")
        written[symbol].extend(i["timestamp"]["S"] for i in items)
        return real.batch_write_item(RequestItems=RequestItems)

    response = process_batch(
        kinesis_event(entries),
        store,
        dynamodb=Wrapped(real, batch_write_item=recording),
        sleep=lambda _: None,
    )

    # THEN each symbol's items went out in timestamp order, AAA stopped after its failed chunk
    assert written["BBB"] == sorted(q.timestamp for q in quotes[60:])
    assert written["AAA"] == sorted(q.timestamp for q in quotes[:60])[:25]
    assert aaa_calls == [25, 25]  # the third chunk was never attempted
    failed_seqs = {int(f["itemIdentifier"]) for f in response["batchItemFailures"]}
    first_unwritten = sorted(q.timestamp for q in quotes[:60])[25]
    expected = {n + 1 for n, i in enumerate(order) if i < 60 and quotes[i].timestamp >= first_unwritten}
    assert len(expected) == 35 and failed_seqs == expected
