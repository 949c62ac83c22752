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
from kinesis_events import NOW, SHARD, MemoryBucket, MemoryTable
from kinesis_events import event as _event
from kinesis_events import quote as _quote

from helpers.core import batch_plan
from helpers.core.batch_plan import StoreObject
from helpers.core.checkpoint import Checkpoint
from helpers.core.layout import checkpoint_key
from helpers.core.quotes import Quote, parse_record
from helpers.pipeline.config import load_settings
from helpers.pipeline.processor import (
    MAX_WRITE_ATTEMPTS,
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

    aapl = raw_key(SETTINGS, "AAPL", "2026", SHARD, seqs[0])
    msft = raw_key(SETTINGS, "MSFT", "2026", SHARD, seqs[2])
    quarantine = quarantine_key(SETTINGS, "2026-07-29", SHARD, seqs[3])
    assert aapl == f"raw/symbol=AAPL/year=2026/{SHARD}-{seqs[0]}.ndjson"
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


class MemoryS3(MemoryBucket):
    """A bucket in memory; ``refuse`` makes PutObject of matching keys fail."""

    def __init__(self, refuse: str = "\0") -> None:
        super().__init__()
        self.refuse = refuse

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:
        if self.refuse in Key:
            raise RuntimeError("injected PutObject failure")
        return super().put_object(Bucket, Key, Body, ContentType)


class RefusingTable(MemoryTable):
    """A table in memory; items whose key is in ``refuse`` come back unprocessed."""

    def __init__(self, refuse: set[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.refuse = refuse or set()

    def refused(self, request: dict[str, Any]) -> bool:
        item = request.get("PutRequest", {}).get("Item")
        return item is not None and batch_plan.item_key(item) in self.refuse


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines()]


def test_process_batch_commits_the_prefix_below_the_first_failed_item() -> None:
    # GIVEN AAA and BBB alternating (seq 1-8), a bad record (9), and a table refusing AAA at seq 5
    quotes = [_quote("AAA" if n % 2 else "BBB", n) for n in range(1, 9)]
    event = _event([(n, q) for n, q in enumerate(quotes, start=1)] + [(9, b"{}")])
    s3, table = MemoryS3(), RefusingTable(refuse={("AAA", quotes[4].timestamp)})
    sleeps: list[float] = []

    response = process_batch(
        event, SETTINGS, s3=s3, dynamodb=table, now=NOW, register_partitions=False, sleep=sleeps.append
    )

    # THEN the refused record and the AAA bar stored after it (outside the gap-free run) are retried
    assert response == {"batchItemFailures": [{"itemIdentifier": "5"}, {"itemIdentifier": "7"}]}
    assert len(sleeps) == MAX_WRITE_ATTEMPTS - 1 and all(0 <= s <= 1.0 for s in sleeps)
    aaa, bbb = (f"raw/symbol={sym}/year=2026/{SHARD}-{seq}.ndjson" for sym, seq in (("AAA", 1), ("BBB", 2)))
    # the stores hold exactly the records below it (the quarantine object of 9 is deleted)
    assert sorted(s3.objects) == sorted([aaa, bbb, manifest_key(SHARD, "1"), checkpoint_key(SHARD)])
    assert [r["timestamp"] for r in _lines(s3.objects[aaa])] == [quotes[0].timestamp, quotes[2].timestamp]
    assert [r["timestamp"] for r in _lines(s3.objects[bbb])] == [quotes[1].timestamp, quotes[3].timestamp]
    assert json.loads(s3.objects[manifest_key(SHARD, "1")]) == {
        "shard": SHARD,
        "first_sequence_number": "1",
        "last_committed_sequence_number": "4",
        "accepted": ["1", "2", "3", "4"],
        "quarantined": {},
        "parked": {},
    }
    mark = Checkpoint.from_json(s3.objects[checkpoint_key(SHARD)], SHARD)
    assert (mark.sequence_number, mark.attempts("5"), mark.attempts("7")) == ("4", 1, 0)
    # the table keeps the items written above the cutoff (6, 7, 8): the retry rewrites them identically
    assert sorted(table.items) == sorted((q.symbol, q.timestamp) for q in quotes if q is not quotes[4])
    # the trend Lambda is told only about gap-free runs: AAA up to 3 (not 7), BBB up to 8
    assert table.marks == [
        ("AAA", quotes[2].timestamp, quotes[0].timestamp, "2"),
        ("BBB", quotes[7].timestamp, quotes[1].timestamp, "4"),
    ]


def test_process_batch_uncommits_a_shard_whose_manifest_failed() -> None:
    s3 = MemoryS3(refuse="manifests/")
    event = _event([(1, _quote("AAA", 1)), (2, _quote("AAA", 2))])
    response = process_batch(event, SETTINGS, s3=s3, dynamodb=RefusingTable(), register_partitions=False)
    assert response == {"batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "2"}]}
    assert set(s3.objects) == {
        checkpoint_key(SHARD)
    }  # the raw object was deleted again: the retry rewrites it
    mark = Checkpoint.from_json(s3.objects[checkpoint_key(SHARD)], SHARD)
    assert mark.sequence_number == "" and mark.pending is not None and mark.pending.first == "1"  # the intent


@pytest.mark.parametrize("failing", ["symbol=BBB/", "quarantine/"])
def test_process_batch_fails_the_records_of_an_object_that_could_not_be_put(failing: str) -> None:
    s3 = MemoryS3(refuse=failing)
    event = _event([(1, _quote("AAA", 1)), (2, _quote("BBB", 1)), (3, b"{}"), (4, _quote("AAA", 2))])
    response = process_batch(event, SETTINGS, s3=s3, dynamodb=RefusingTable(), register_partitions=False)
    first_failed = 2 if failing == "symbol=BBB/" else 3
    assert response == {"batchItemFailures": [{"itemIdentifier": str(first_failed)}]}
    (manifest,) = [json.loads(body) for key, body in s3.objects.items() if key.startswith("manifests/")]
    assert manifest["accepted"] == [str(n) for n in range(1, first_failed)]


def _aggregate(*parts: bytes | Quote) -> bytes:
    """A JSON text sequence (RFC 7464), as the producer aggregates a symbol's quotes."""
    return b"".join(b"\x1e" + (p.to_json() if isinstance(p, Quote) else p) + b"\n" for p in parts)


def test_only_data_starting_with_a_record_separator_is_an_aggregate() -> None:
    pretty = b'{"symbol": "AAPL",\n "price": 1}'  # one record across lines: one rejection, not two
    (one,) = batch_plan.decode(0, _event([(1, pretty)])["Records"][0], NOW)
    assert one.parts == 1 and one.ident == "1" and one.data == pretty
    two = batch_plan.decode(5, _event([(2, b"\x1e{\n\x1e")])["Records"][0], NOW)
    assert [(r.index, r.ident, r.data) for r in two] == [(5, "2:0", b"{"), (6, "2:1", b"")]


def test_an_aggregate_record_stores_each_quote_and_quarantines_each_bad_line() -> None:
    # GIVEN record 1 packs three AAA quotes and a broken line, record 2 one BBB quote
    aaa = [_quote("AAA", n) for n in range(1, 4)]
    event = _event([(1, _aggregate(aaa[0], aaa[1], b"{", aaa[2])), (2, _quote("BBB", 1))])
    s3, table = MemoryS3(), RefusingTable()

    response = process_batch(event, SETTINGS, s3=s3, dynamodb=table, now=NOW, register_partitions=False)

    assert response == {"batchItemFailures": []}
    assert sorted(table.items) == sorted([*((q.symbol, q.timestamp) for q in aaa), ("BBB", aaa[0].timestamp)])
    raw = s3.objects[f"raw/symbol=AAA/year=2026/{SHARD}-1.ndjson"]
    assert [r["timestamp"] for r in _lines(raw)] == [q.timestamp for q in aaa]
    manifest = json.loads(s3.objects[manifest_key(SHARD, "1")])
    assert manifest["accepted"] == ["1:0", "1:1", "1:3", "2"]  # each quote once, by record and line
    assert manifest["quarantined"] == {"1:2": "bad_json"}
    (bad,) = [_lines(body)[0] for key, body in s3.objects.items() if key.startswith("quarantine/")]
    assert (bad["sequence_number"], bad["part"], base64.b64decode(bad["data_base64"])) == ("1", 2, b"{")


def test_an_aggregate_fails_and_commits_whole() -> None:
    # GIVEN the table refuses the second quote of aggregate 2 (AAA 3-4); 1 and 3 are single quotes
    q = [_quote("AAA", n) for n in range(1, 6)]
    event = _event([(1, q[0]), (2, _aggregate(q[1], q[2], q[3])), (3, q[4])])
    s3, table = MemoryS3(), RefusingTable(refuse={("AAA", q[2].timestamp)})

    response = process_batch(
        event, SETTINGS, s3=s3, dynamodb=table, now=NOW, register_partitions=False, sleep=lambda _: None
    )

    # THEN the aggregate's Kinesis record is reported once (with the AAA bar after the gap, as for
    # single quotes); nothing of it or after it is committed
    assert response == {"batchItemFailures": [{"itemIdentifier": "2"}, {"itemIdentifier": "3"}]}
    assert json.loads(s3.objects[manifest_key(SHARD, "1")])["accepted"] == ["1"]
    assert [r["timestamp"] for r in _lines(s3.objects[f"raw/symbol=AAA/year=2026/{SHARD}-1.ndjson"])] == [
        q[0].timestamp
    ]
    assert Checkpoint.from_json(s3.objects[checkpoint_key(SHARD)], SHARD).sequence_number == "1"
    # the trend Lambda may evaluate what is in the table without a gap: AAA 1-2
    assert table.marks == [("AAA", q[1].timestamp, q[0].timestamp, "2")]
