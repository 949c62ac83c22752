"""The processor's batch planning rules, pure (:mod:`helpers.core.batch_plan`).

What a Kinesis batch becomes (records, items, raw and quarantine objects and their keys) and what
is committed after a partial failure (cutoffs, manifests, trims, the partial batch response).
"""

from __future__ import annotations

import json
from typing import Any

from kinesis_events import NOW, SHARD
from kinesis_events import entry as _entry
from kinesis_events import event as _event
from kinesis_events import quote as _quote

from helpers.core import batch_plan
from helpers.core.batch_plan import Record, StoreObject
from helpers.core.layout import manifest_key
from helpers.core.quotes import Quote, Rejected
from helpers.pipeline.processor import MAX_ITEMS_PER_BATCH_WRITE

OTHER = "shardId-000000000001"


# --------------------------------------------------------------------------- helpers


def _serialize(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values, as boto3's TypeSerializer writes them for these items."""
    return {k: {"S": v} if isinstance(v, str) else {"N": str(v)} for k, v in item.items()}


def _plan(event: dict[str, Any]) -> batch_plan.BatchPlan:
    return batch_plan.plan_batch(event, NOW, _serialize)


def _by_key(objects: list[StoreObject]) -> dict[str, list[str]]:
    """Object key -> the sequence numbers it holds."""
    return {o.key: [r.seq for r in o.records] for o in objects}


# --------------------------------------------------------------------------- records and items


def test_decode_takes_shard_sequence_and_arrival_from_the_envelope() -> None:
    quote = _quote("AAPL", 30)
    (record,) = batch_plan.decode(3, _entry(17, quote.to_json(), OTHER, "AAPL"), NOW)
    assert (record.index, record.shard, record.seq, record.order) == (3, OTHER, "17", 17)
    assert record.partition_key == "AAPL" and record.data == quote.to_json()
    assert record.arrival == "2026-07-29T13:30:01Z" and record.parsed == quote


def test_decode_quarantines_bad_base64_and_falls_back_on_missing_fields() -> None:
    raw = {"kinesis": {"sequenceNumber": "x9", "data": "not base64!"}, "eventID": ""}
    (record,) = batch_plan.decode(0, raw, NOW)
    assert record.shard == "shardId-unknown" and record.order == -1 and record.arrival == NOW
    assert isinstance(record.parsed, Rejected) and record.parsed.reason == "bad_base64"
    assert record.data == b"not base64!" and record.parsed.reason in batch_plan.ENVELOPE_REASONS


def test_objects_are_per_shard_symbol_and_year_and_named_by_their_first_record() -> None:
    shard0 = _event(
        [
            (5, _quote("AAA", 1)),
            (3, _quote("AAA", 2, day="2025-12-31")),
            (4, _quote("BBB", 1)),
            (7, _quote("AAA", 3, day="2026-01-02")),  # another day of 2026: the object of 5
        ]
    )
    shard1 = _event([(2, _quote("AAA", 3)), (6, b"{}")], shard=OTHER)
    p = _plan({"Records": shard0["Records"] + shard1["Records"]})
    assert _by_key(p.objects) == {
        f"raw/symbol=AAA/year=2025/{SHARD}-3.ndjson": ["3"],
        f"raw/symbol=BBB/year=2026/{SHARD}-4.ndjson": ["4"],
        f"raw/symbol=AAA/year=2026/{SHARD}-5.ndjson": ["5", "7"],
        f"raw/symbol=AAA/year=2026/{OTHER}-2.ndjson": ["2"],
        f"quarantine/dt=2026-07-29/{OTHER}-6.ndjson": ["6"],
    }
    assert [o.shard for o in p.objects] == [SHARD, SHARD, SHARD, OTHER, OTHER]


def test_a_batch_of_daily_bars_makes_an_object_per_symbol_and_year_not_per_bar() -> None:
    # 500 daily bars of one symbol span about two years: 2 objects (a day partition made 500)
    days = [f"{2012 + n // 250}-{1 + n % 250 // 21:02d}-{1 + n % 21:02d}" for n in range(500)]
    p = _plan(_event([(n + 1, _quote("AAA", 0, day=day)) for n, day in enumerate(days)]))
    assert _by_key(p.objects).keys() == {
        f"raw/symbol=AAA/year=2012/{SHARD}-1.ndjson",
        f"raw/symbol=AAA/year=2013/{SHARD}-251.ndjson",
    }
    assert sum(len(o.records) for o in p.objects) == 500


def test_a_redelivered_timestamp_makes_one_item_the_last_record_wins() -> None:
    p = _plan(_event([(1, _quote("AAA", 1, 100.0)), (2, _quote("AAA", 1, 101.0))]))
    (item,) = p.items
    assert item["price"] == {"N": "101.0"}
    assert [r.seq for r in p.covers[("AAA", "2026-07-29T13:01:00Z")]] == ["1", "2"]
    assert _by_key(p.objects) == {f"raw/symbol=AAA/year=2026/{SHARD}-1.ndjson": ["1", "2"]}


def test_a_quote_the_serializer_refuses_is_quarantined_as_invalid_field() -> None:
    def serialize(item: dict[str, Any]) -> dict[str, Any]:
        if item["symbol"] == "BAD":
            raise ValueError("number out of range")
        return {"symbol": {"S": item["symbol"]}, "timestamp": {"S": item["timestamp"]}}

    event = _event([(1, _quote("BAD", 1)), (2, _quote("OK", 1))])
    decoded = batch_plan.decode_event(event, NOW)
    records, items, covers = batch_plan.plan_items(decoded, NOW, serialize)
    assert items == [{"symbol": {"S": "OK"}, "timestamp": {"S": "2026-07-29T13:01:00Z"}}]
    assert list(covers) == [("OK", "2026-07-29T13:01:00Z")]
    assert records[0].parsed == Rejected("invalid_field", "cannot be stored in DynamoDB: number out of range")
    objects = batch_plan.group_objects(records)
    assert _by_key(objects) == {
        f"quarantine/dt=2026-07-29/{SHARD}-1.ndjson": ["1"],
        f"raw/symbol=OK/year=2026/{SHARD}-2.ndjson": ["2"],
    }


def test_series_are_per_symbol_in_time_order_and_cut_into_batch_write_chunks() -> None:
    entries = [(n + 1, _quote("AAA" if n % 3 else "BBB", 59 - n)) for n in range(60)]
    series = batch_plan.series_by_symbol(_plan(_event(entries)).items)
    assert [s[0]["symbol"]["S"] for s in series] == ["AAA", "BBB"] and [len(s) for s in series] == [40, 20]
    for s in series:
        stamps = [i["timestamp"]["S"] for i in s]
        assert stamps == sorted(stamps)
    assert [len(c) for c in batch_plan.chunks(series[0], MAX_ITEMS_PER_BATCH_WRITE)] == [25, 15]
    assert batch_plan.chunks([], MAX_ITEMS_PER_BATCH_WRITE) == []


# --------------------------------------------------------------------------- commit


def _records(*specs: tuple[str, int, bool]) -> list[Record]:
    """Records of (shard, sequence number, accepted?); a rejected one has reason ``bad_json``."""
    out = []
    for index, (shard, seq, accepted) in enumerate(specs):
        parsed: Quote | Rejected = _quote("AAA", seq % 60) if accepted else Rejected("bad_json", "x")
        out.append(Record(index, shard, str(seq), seq, "K", b"", "2026-07-29T13:30:01Z", parsed))
    return out


def test_cutoff_is_the_lowest_failed_sequence_number_per_shard() -> None:
    records = _records(
        (SHARD, 1, True), (SHARD, 2, True), (SHARD, 3, True), (OTHER, 9, True), (OTHER, 7, True)
    )
    cutoffs = batch_plan.cutoffs(records, failed={2, 1, 3})  # indexes: seq 3, 2 of SHARD and 9 of OTHER
    assert cutoffs == {SHARD: 2, OTHER: 9}
    assert [r.seq for r in records if batch_plan.committed(r, cutoffs)] == ["1", "7"]
    assert batch_plan.cutoffs(records, failed=set()) == {}
    assert all(batch_plan.committed(r, {}) for r in records)


def test_manifest_lists_the_committed_prefix_with_quarantine_reasons() -> None:
    records = _records((SHARD, 1, True), (SHARD, 2, False), (SHARD, 3, True), (SHARD, 4, True))
    (rows,) = batch_plan.records_by_shard(records).values()
    key, body = batch_plan.manifest(SHARD, rows, {SHARD: 4})
    assert key == manifest_key(SHARD, "1") == f"manifests/{SHARD}/1.json"
    assert body == {
        "shard": SHARD,
        "first_sequence_number": "1",
        "last_committed_sequence_number": "3",
        "accepted": ["1", "3"],
        "quarantined": {"2": "bad_json"},
        "parked": {},
    }
    everything = {**body, "last_committed_sequence_number": "4", "accepted": ["1", "3", "4"]}
    assert batch_plan.manifest(SHARD, rows, {})[1] == everything
    assert batch_plan.manifest(SHARD, rows, {SHARD: 1}) == (key, None)  # nothing committed: delete it


def test_records_by_shard_are_in_sequence_order() -> None:
    records = _records((SHARD, 12, True), (OTHER, 3, True), (SHARD, 4, True), (SHARD, 100, True))
    assert {s: [r.seq for r in rows] for s, rows in batch_plan.records_by_shard(records).items()} == {
        SHARD: ["4", "12", "100"],
        OTHER: ["3"],
    }


def test_a_shard_whose_manifest_failed_is_wholly_uncommitted() -> None:
    records = _records((SHARD, 5, True), (OTHER, 1, True), (SHARD, 3, True))
    assert batch_plan.uncommit_shard(records, SHARD) == ({0, 2}, 3)


def test_trim_cuts_straddling_objects_deletes_those_above_and_leaves_the_rest() -> None:
    p = _plan(_event([(n, _quote("AAA" if n <= 4 else "BBB", n)) for n in range(1, 8)] + [(8, b"{}")]))
    other = _plan(_event([(9, _quote("CCC", 9))], shard=OTHER))
    objects = p.objects + other.objects
    actions = batch_plan.trim_plan(objects, {SHARD: 3})
    by_key = {a.obj.key: (a.cutoff, a.delete) for a in actions}
    assert by_key == {
        f"raw/symbol=AAA/year=2026/{SHARD}-1.ndjson": (3, False),  # 1 2 | 3 4
        f"raw/symbol=BBB/year=2026/{SHARD}-5.ndjson": (3, True),
        f"quarantine/dt=2026-07-29/{SHARD}-8.ndjson": (3, True),
    }
    (aaa,) = [a for a in actions if not a.delete]
    assert [json.loads(line)["timestamp"] for line in aaa.obj.body(aaa.cutoff).splitlines()] == [
        "2026-07-29T13:01:00Z",
        "2026-07-29T13:02:00Z",
    ]
    assert batch_plan.trim_plan(objects, {SHARD: 9}) == []  # every record of the shard is below 9


def test_committed_partitions_are_the_written_raw_objects_not_deleted() -> None:
    p = _plan(_event([(1, _quote("AAA", 1)), (2, _quote("BBB", 2)), (3, _quote("CCC", 3)), (4, b"{}")]))
    for obj in p.objects:
        obj.written = not obj.key.startswith("raw/symbol=CCC/")
    deleted = {o.key for o in p.objects if "symbol=BBB" in o.key}
    assert batch_plan.committed_partitions(p.objects, deleted) == {("AAA", "2026")}


def test_batch_item_failures_are_the_failed_sequence_numbers_in_order() -> None:
    records = _records((SHARD, 30, True), (SHARD, 4, True), (SHARD, 100, True), (SHARD, 5, True))
    assert batch_plan.batch_item_failures(records, {0, 2, 1}) == [
        {"itemIdentifier": "4"},
        {"itemIdentifier": "30"},
        {"itemIdentifier": "100"},
    ]


def test_summary_counts_what_the_batch_did() -> None:
    p = _plan(_event([(1, _quote("AAA", 1)), (2, b"{}"), (3, _quote("AAA", 2)), (4, b"not json")]))
    summary = batch_plan.summary(p, failed={2}, cutoffs={SHARD: 3}, deleted=set())
    assert summary == {
        "message": "processed batch",
        "records": 4,
        "accepted": 2,
        "quarantined": {"missing_field": 1, "bad_json": 1},
        "parked": 0,
        "redelivered": 0,
        "failed": 1,
        "committed": 2,
        "raw_objects": 1,
        "quarantine_objects": 1,
        "dynamodb_items": 2,
        "deleted_objects": 0,
        "shards": [SHARD],
        "first_sequence_number": "1",
    }
