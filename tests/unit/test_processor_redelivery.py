"""Adversarial: random write faults, partial-batch retries and new batch boundaries, no stack.

A Kinesis consumer is simulated the way Lambda drives one shard with ReportBatchItemFailures:
each invocation gets the records from the checkpoint on, in a batch of random size; the shard
resumes at the lowest reported sequence number, and the next batch may have other boundaries.
S3 PutObject of a new key fails at random and DynamoDB returns random UnprocessedItems, so
retries, cut-backs and uncommitted manifests all happen. Whatever the schedule, the stores end
as the Guarantees table says: every accepted record's raw line exactly once, one item per
(symbol, timestamp), every malformed record quarantined once with its reason.

Whole-batch redeliveries after a timeout (writes done, response lost) are the chaos suite's.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from kinesis_events import event, quote

from helpers.core import batch_plan
from helpers.pipeline.config import load_settings
from helpers.pipeline.processor import process_batch

SETTINGS = load_settings(environ={})
MAX_INVOCATIONS = 400  # bounded: a schedule that never commits fails the test instead of hanging


class FlakyS3:
    """PutObject of a key not yet stored fails with probability ``p``; rewrites and deletes succeed."""

    def __init__(self, rng: random.Random, p: float) -> None:
        self.objects: dict[str, bytes] = {}
        self.rng, self.p, self.lock = rng, p, threading.Lock()

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:
        with self.lock:
            if Key not in self.objects and self.rng.random() < self.p:
                raise RuntimeError("injected PutObject failure")
            self.objects[Key] = Body
        return {}

    def delete_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        with self.lock:
            self.objects.pop(Key, None)
        return {}


class FlakyTable:
    """BatchWriteItem leaves each item unprocessed with probability ``p``."""

    def __init__(self, rng: random.Random, p: float) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.rng, self.p, self.lock = rng, p, threading.Lock()

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        unprocessed = []
        with self.lock:
            for request in requests:
                if self.rng.random() < self.p:
                    unprocessed.append(request)
                else:
                    item = request["PutRequest"]["Item"]
                    self.items[batch_plan.item_key(item)] = item
        return {"UnprocessedItems": {table: unprocessed} if unprocessed else {}}


@given(
    symbols=st.integers(1, 3),
    count=st.integers(1, 60),
    bad=st.sets(st.integers(1, 60), max_size=5),
    p_s3=st.sampled_from([0.0, 0.1, 0.3]),
    p_ddb=st.sampled_from([0.0, 0.3, 0.6]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_faults_and_batch_boundaries_store_every_record_exactly_once(
    symbols: int, count: int, bad: set[int], p_s3: float, p_ddb: float, seed: int
) -> None:
    rng = random.Random(seed)
    records: list[tuple[int, Any]] = []
    for seq in range(1, count + 1):
        sym = f"S{seq % symbols}"
        records.append((seq, b'{"symbol": "BAD"' if seq in bad else quote(sym, seq % 60, 100.0 + seq)))
    s3, table = FlakyS3(rng, p_s3), FlakyTable(rng, p_ddb)

    position, invocations = 0, 0  # index of the first record not yet committed
    while position < len(records):
        invocations += 1
        assert invocations <= MAX_INVOCATIONS, "the shard never moved past its failures"
        batch = records[position : position + rng.randint(1, 25)]
        response = process_batch(
            event(batch), SETTINGS, s3=s3, dynamodb=table, register_partitions=False, sleep=lambda _: None
        )
        failed = [int(f["itemIdentifier"]) for f in response["batchItemFailures"]]
        position = (min(failed) - 1) if failed else position + len(batch)

    accepted = {(q.symbol, q.timestamp) for seq, q in records if seq not in bad}
    lines = Counter(
        (row["symbol"], row["timestamp"])
        for key, body in s3.objects.items()
        if key.startswith(SETTINGS.raw_prefix)
        for row in map(json.loads, body.splitlines())
    )
    assert lines == Counter(accepted)  # every accepted record's raw line, once
    assert set(table.items) == accepted  # one item per (symbol, timestamp)
    quarantined = Counter(
        json.loads(line)["sequence_number"]
        for key, body in s3.objects.items()
        if key.startswith(SETTINGS.quarantine_prefix)
        for line in body.splitlines()
    )
    assert quarantined == Counter(str(seq) for seq in bad if seq <= count)  # once each
    manifests = [json.loads(b) for k, b in s3.objects.items() if k.startswith("manifests/")]
    committed = Counter(seq for m in manifests for seq in m["accepted"])
    assert set(committed) == {str(seq) for seq, _ in records if seq not in bad}
