"""The processor Lambda's batch logic without a stack (:mod:`helpers.pipeline.processor`).

The sample event planned under the settings' layout, and :func:`~helpers.pipeline.processor.process_batch`
driven with in-memory S3 and DynamoDB stand-ins: what is written, failed and committed. The pure
rules alone: tests/unit/test_batch_plan.py; against the local stack:
tests/integration/test_processor_stack.py.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from kinesis_events import NOW, SHARD
from kinesis_events import event as _event
from kinesis_events import quote as _quote

from helpers.core import batch_plan
from helpers.core.batch_plan import StoreObject
from helpers.core.quotes import Quote, parse_record
from helpers.pipeline.config import load_settings
from helpers.pipeline.processor import (
    manifest_key,
    plan,
    process_batch,
    processed_item,
    quarantine_key,
    raw_key,
)

EVENTS = Path(__file__).resolve().parent.parent / "events"
SETTINGS = load_settings(environ={})


# --------------------------------------------------------------------------- helpers


def _plan(event: dict[str, Any]) -> batch_plan.BatchPlan:
    return plan(event, SETTINGS, NOW)


def _by_key(objects: list[StoreObject]) -> dict[str, list[str]]:
    """Object key -> the sequence numbers it holds."""
    return {o.key: [r.seq for r in o.records] for o in objects}


# --------------------------------------------------------------------------- planning under settings


def test_an_empty_event_makes_no_call() -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"unexpected call {name}")

    settings = load_settings(environ={})
    result = process_batch(
        {"Records": []}, settings, s3=NoCalls(), dynamodb=NoCalls(), register_partitions=False
    )
    assert result == {"batchItemFailures": []}


def test_processed_item_has_decimals_derived_fields_and_processed_at() -> None:
    quote = parse_record(
        b'{"symbol":"AAPL","timestamp":"2026-07-29T13:30:00Z","price":339.69,"previous_close":338.0,'
        b'"open":339.0,"high":340.1,"low":338.9,"volume":120345,"source":"t"}'
    )
    assert isinstance(quote, Quote)
    item = processed_item(quote, NOW)
    assert item["price"] == Decimal("339.69") and item["volume"] == 120345
    assert item["change"] == Decimal("1.69") and item["change_pct"] == Decimal("0.5")
    assert item["processed_at"] == NOW and "produced_at" not in item  # None is left out
    assert not any(isinstance(v, float) for v in item.values())


def test_sample_event_plans_two_raw_objects_a_quarantine_object_and_three_items() -> None:
    event = json.loads((EVENTS / "kinesis_batch.json").read_text())
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    p = _plan(event)

    aapl = raw_key(SETTINGS, "AAPL", "2026-07-29", SHARD, seqs[0])
    msft = raw_key(SETTINGS, "MSFT", "2026-07-29", SHARD, seqs[2])
    quarantine = quarantine_key(SETTINGS, "2026-07-29", SHARD, seqs[3])
    assert aapl == f"raw/symbol=AAPL/dt=2026-07-29/{SHARD}-{seqs[0]}.ndjson"
    assert quarantine == f"quarantine/dt=2026-07-29/{SHARD}-{seqs[3]}.ndjson"
    assert _by_key(p.objects) == {aapl: seqs[:2], msft: [seqs[2]], quarantine: [seqs[3]]}
    (raw,) = [o for o in p.objects if o.key == aapl]
    assert [json.loads(line)["timestamp"] for line in raw.body().splitlines()] == [
        "2026-07-29T13:30:00Z",
        "2026-07-29T13:31:00Z",
    ]
    (bad,) = [json.loads(o.body()) for o in p.objects if o.kind == "quarantine"]
    assert bad["reason"] == "invalid_symbol" and bad["sequence_number"] == seqs[3]
    assert "\\u200b" in bad["detail"] and bad["shard"] == SHARD and bad["arrival"] == "2026-07-29T13:31:02Z"
    assert base64.b64decode(bad["data_base64"]) == p.records[3].data

    items = {batch_plan.item_key(i): i for i in p.items}
    assert sorted(items) == [
        ("AAPL", "2026-07-29T13:30:00Z"),
        ("AAPL", "2026-07-29T13:31:00Z"),
        ("MSFT", "2026-07-29T13:30:00Z"),
    ]
    msft_item = items[("MSFT", "2026-07-29T13:30:00Z")]
    assert msft_item["change"] == {"N": "-2.25"} and msft_item["change_pct"] == {"N": "-0.5455"}
    assert msft_item["processed_at"] == {"S": NOW} and msft_item["price"] == {"N": "410.25"}


# --------------------------------------------------------------------------- process_batch in memory


class MemoryS3:
    """put_object / delete_object into a dict; ``refuse`` makes PutObject of matching keys fail."""

    def __init__(self, refuse: str = "\0") -> None:
        self.objects: dict[str, bytes] = {}
        self.refuse = refuse

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:
        if self.refuse in Key:
            raise RuntimeError("injected PutObject failure")
        self.objects[Key] = Body
        return {}

    def delete_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self.objects.pop(Key, None)
        return {}


class MemoryTable:
    """batch_write_item into a dict; items whose key is in ``refuse`` come back unprocessed."""

    def __init__(self, refuse: set[tuple[str, str]] | None = None) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.refuse = refuse or set()

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        unprocessed = []
        for request in requests:
            item = request["PutRequest"]["Item"]
            key = batch_plan.item_key(item)
            if key in self.refuse:
                unprocessed.append(request)
            else:
                self.items[key] = item
        return {"UnprocessedItems": {table: unprocessed} if unprocessed else {}}


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines()]


def test_process_batch_commits_the_prefix_below_the_first_failed_item() -> None:
    # GIVEN AAA and BBB alternating (seq 1-8), a bad record (9), and a table refusing AAA at seq 5
    quotes = [_quote("AAA" if n % 2 else "BBB", n) for n in range(1, 9)]
    event = _event([(n, q) for n, q in enumerate(quotes, start=1)] + [(9, b"{}")])
    s3, table = MemoryS3(), MemoryTable(refuse={("AAA", quotes[4].timestamp)})
    sleeps: list[float] = []

    response = process_batch(
        event, SETTINGS, s3=s3, dynamodb=table, now=NOW, register_partitions=False, sleep=sleeps.append
    )

    # THEN only the refused record is reported, and the stores hold exactly the records below it
    assert response == {"batchItemFailures": [{"itemIdentifier": "5"}]}
    assert len(sleeps) == 4 and all(0 <= s <= 1.0 for s in sleeps)  # MAX_WRITE_ATTEMPTS - 1 backoffs
    aaa, bbb = (
        f"raw/symbol={sym}/dt=2026-07-29/{SHARD}-{seq}.ndjson" for sym, seq in (("AAA", 1), ("BBB", 2))
    )
    assert sorted(s3.objects) == sorted([aaa, bbb, manifest_key(SHARD, "1")])  # quarantine of 9 deleted
    assert [r["timestamp"] for r in _lines(s3.objects[aaa])] == [quotes[0].timestamp, quotes[2].timestamp]
    assert [r["timestamp"] for r in _lines(s3.objects[bbb])] == [quotes[1].timestamp, quotes[3].timestamp]
    assert json.loads(s3.objects[manifest_key(SHARD, "1")]) == {
        "shard": SHARD,
        "first_sequence_number": "1",
        "last_committed_sequence_number": "4",
        "accepted": ["1", "2", "3", "4"],
        "quarantined": {},
    }
    # the table keeps the items written above the cutoff (6, 7, 8): the retry rewrites them identically
    assert sorted(table.items) == sorted((q.symbol, q.timestamp) for q in quotes if q is not quotes[4])


def test_process_batch_uncommits_a_shard_whose_manifest_failed() -> None:
    s3 = MemoryS3(refuse="manifests/")
    event = _event([(1, _quote("AAA", 1)), (2, _quote("AAA", 2))])
    response = process_batch(event, SETTINGS, s3=s3, dynamodb=MemoryTable(), register_partitions=False)
    assert response == {"batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "2"}]}
    assert s3.objects == {}  # the raw object was deleted again: the retry rewrites it


@pytest.mark.parametrize("failing", ["symbol=BBB/", "quarantine/"])
def test_process_batch_fails_the_records_of_an_object_that_could_not_be_put(failing: str) -> None:
    s3 = MemoryS3(refuse=failing)
    event = _event([(1, _quote("AAA", 1)), (2, _quote("BBB", 1)), (3, b"{}"), (4, _quote("AAA", 2))])
    response = process_batch(event, SETTINGS, s3=s3, dynamodb=MemoryTable(), register_partitions=False)
    first_failed = 2 if failing == "symbol=BBB/" else 3
    assert response == {"batchItemFailures": [{"itemIdentifier": str(first_failed)}]}
    (manifest,) = [json.loads(body) for key, body in s3.objects.items() if key.startswith("manifests/")]
    assert manifest["accepted"] == [str(n) for n in range(1, first_failed)]
