"""Adversarial: random write faults, crashes, redeliveries and new batch boundaries, no stack.

A Kinesis consumer is simulated the way Lambda drives one shard with ReportBatchItemFailures:
each invocation gets the records from the checkpoint on, in a batch of random size; the shard
resumes at the lowest reported sequence number, and the next batch may have other boundaries.
On top of that the schedule

* fails S3 PutObject of a new key and leaves DynamoDB items unprocessed at random, so retries,
  cut-backs, uncommitted manifests and parked records all happen;
* crashes invocations midway (a write raises an exception no handler catches, as a SIGKILL or a
  timeout leaves the stores): Lambda retries the same records, possibly bisected;
* redelivers already committed records (a lost response, a re-created mapping reading from
  TRIM_HORIZON): the shard jumps back to an earlier record, with new boundaries;
* gives up (as after MaximumRetryAttempts) on a batch that keeps failing: its records are
  skipped, to be redriven from the failure queue, and nothing written for them may stay.

Whatever the schedule, the stores end as the Guarantees table says: every accepted record either
has its raw line exactly once and its item, or is parked exactly once with no line and no item;
every malformed record is quarantined once with its reason (or parked, if that write kept
failing); manifests count what is stored; and every mark the trend Lambda evaluates covers a
gap-free run (no earlier bar of the symbol that ends up stored was missing when it was written).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kinesis_events import MemoryBucket, MemoryTable, event, quote

from helpers.pipeline.config import load_settings
from helpers.pipeline.processor import process_batch

SETTINGS = load_settings(environ={})
MAX_INVOCATIONS = 600  # bounded: a schedule that never commits fails the test instead of hanging


class Crash(BaseException):
    """A write that never returns: the invocation dies with whatever it wrote so far."""


class Chaos:
    """The shared dice of one schedule: faults per new S3 key, per item, and crashes."""

    def __init__(self, rng: random.Random, p_s3: float, p_ddb: float, p_crash: float) -> None:
        self.rng, self.p_s3, self.p_ddb, self.p_crash = rng, p_s3, p_ddb, p_crash
        self.lock = threading.Lock()

    def roll(self, p: float) -> bool:
        with self.lock:
            return self.rng.random() < p


class FlakyS3(MemoryBucket):
    """PutObject of a key not yet stored fails with probability ``p_s3``; any write may crash."""

    def __init__(self, chaos: Chaos) -> None:
        super().__init__()
        self.chaos, self.lock = chaos, threading.Lock()

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:
        if self.chaos.roll(self.chaos.p_crash):
            raise Crash(Key)
        with self.lock:
            if Key not in self.objects and self.chaos.roll(self.chaos.p_s3):
                raise RuntimeError("injected PutObject failure")
            return super().put_object(Bucket, Key, Body, ContentType)


class FlakyTable(MemoryTable):
    """BatchWriteItem leaves each request unprocessed with probability ``p_ddb``; marks are checked."""

    def __init__(self, chaos: Chaos) -> None:
        super().__init__()
        self.chaos, self.lock = chaos, threading.Lock()
        self.seen_at_mark: list[tuple[str, str, set[str]]] = []  # (symbol, marked bar, bars present)

    def refused(self, request: dict[str, Any]) -> bool:
        return "PutRequest" in request and self.chaos.roll(self.chaos.p_ddb)

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return super().batch_write_item(RequestItems)

    def update_item(self, **request: Any) -> dict[str, Any]:
        with self.lock:
            symbol, ts = request["Key"]["symbol"]["S"], request["Key"]["timestamp"]["S"]
            self.seen_at_mark.append((symbol, ts, {t for s, t in self.items if s == symbol}))
            return super().update_item(**request)


@settings(max_examples=150, deadline=None)
@given(
    symbols=st.integers(1, 3),
    count=st.integers(1, 60),
    bad=st.sets(st.integers(1, 60), max_size=5),
    p_s3=st.sampled_from([0.0, 0.1, 0.3]),
    p_ddb=st.sampled_from([0.0, 0.3, 0.6]),
    p_crash=st.sampled_from([0.0, 0.02, 0.1]),
    p_replay=st.sampled_from([0.0, 0.2]),
    give_up_after=st.sampled_from([2, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_faults_crashes_and_redeliveries_store_every_record_exactly_once(
    symbols: int,
    count: int,
    bad: set[int],
    p_s3: float,
    p_ddb: float,
    p_crash: float,
    p_replay: float,
    give_up_after: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    records: list[tuple[int, Any]] = []
    for seq in range(1, count + 1):
        sym = f"S{seq % symbols}"
        day = "2026-07-29" if seq < 60 else "2026-07-30"  # bars in timestamp order, two partitions
        records.append((seq, b'{"symbol": "BAD"' if seq in bad else quote(sym, seq % 60, 100.0 + seq, day)))
    chaos = Chaos(rng, p_s3, p_ddb, p_crash)
    s3, table = FlakyS3(chaos), FlakyTable(chaos)

    position, invocations = 0, 0  # index of the first record the shard resumes at
    tries: dict[int, int] = {}  # failed invocations starting at a position
    given_up: set[int] = set()  # sequence numbers Lambda skipped after too many retries
    floor = 0  # where the last give-up left the shard
    committed = 0  # the highest sequence number committed so far
    while position < len(records):
        invocations += 1
        assert invocations <= MAX_INVOCATIONS, "the shard never moved past its failures"
        batch = records[position : position + rng.randint(1, 25)]
        try:
            response = process_batch(
                event(batch), SETTINGS, s3=s3, dynamodb=table, register_partitions=False, sleep=lambda _: None
            )
            failed = [int(f["itemIdentifier"]) for f in response["batchItemFailures"]]
        except Crash:
            failed = [batch[0][0]]  # the whole batch is retried
        if failed and min(failed) - 1 == position:  # no progress: one more retry of this record
            tries[position] = tries.get(position, 0) + 1
            if tries[position] > give_up_after:  # Lambda gives up: the batch goes to the failure queue
                given_up.update(seq for seq, _ in batch if seq > committed)  # a replay may repeat some
                position = floor = position + len(batch)
                continue
        position = (min(failed) - 1) if failed else position + len(batch)
        committed = max(committed, position)  # records[:position] are stored (seq = index + 1)
        if rng.random() < p_replay:  # a redelivery of committed records, with other boundaries
            position = rng.randint(floor, position)  # (a given-up range is not delivered again)
    if given_up:  # the shard's next record (a redrive, the next quote) is what cleans up after a give-up
        chaos.p_s3 = chaos.p_ddb = chaos.p_crash = 0.0
        records.append((1000, quote("S0", 59, 99.0, "2026-07-31")))
        assert process_batch(
            event(records[-1:]), SETTINGS, s3=s3, dynamodb=table, register_partitions=False
        ) == {"batchItemFailures": []}

    objects = s3.objects
    raw = Counter(
        (row["symbol"], row["timestamp"])
        for key, body in objects.items()
        if key.startswith(SETTINGS.raw_prefix)
        for row in map(json.loads, body.splitlines())
    )
    parked = Counter(
        json.loads(line)["sequence_number"]
        for key, body in objects.items()
        if key.startswith("parked/")
        for line in body.splitlines()
    )
    good = {seq: q for seq, q in records if seq not in bad and seq not in given_up}
    assert all(n == 1 for n in parked.values()), parked  # parked once each
    stored = {(q.symbol, q.timestamp) for seq, q in good.items() if str(seq) not in parked}
    assert set(parked) <= {str(seq) for seq, _ in records if seq not in given_up}
    assert raw == Counter(stored)  # every stored record's raw line, once; none of a parked one
    assert set(table.items) == stored  # one item per stored (symbol, timestamp), none of a parked one
    quarantined = Counter(
        json.loads(line)["sequence_number"]
        for key, body in objects.items()
        if key.startswith(SETTINGS.quarantine_prefix)
        for line in body.splitlines()
    )
    # once each, unless its quarantine object kept failing: then it is parked instead
    assert quarantined == Counter(
        str(seq) for seq in bad if seq <= count and str(seq) not in parked and seq not in given_up
    )
    manifests = [json.loads(b) for k, b in objects.items() if k.startswith("manifests/")]
    accepted = Counter(seq for m in manifests for seq in m["accepted"])
    assert set(accepted) == {str(seq) for seq in good if str(seq) not in parked}
    assert {seq for m in manifests for seq in m["parked"]} == set(parked)
    for symbol, marked, present in table.seen_at_mark:  # every mark ends a gap-free run
        missing = {ts for s, ts in stored if s == symbol and ts <= marked} - present - {marked}
        assert not missing, (symbol, marked, sorted(missing))
