"""Kinesis' per-shard write limits: the token buckets and the producer's pacer, on a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from helpers.core.shard_limits import (
    BYTES_PER_SECOND,
    PACED_SHARE,
    RECORDS_PER_SECOND,
    ShardPacer,
    ShardRange,
    TokenBucket,
    hash_key,
    shard_for,
)

HALF = 2**127
TWO_SHARDS = (ShardRange("shardId-0", 0, HALF - 1), ShardRange("shardId-1", HALF, 2**128 - 1))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def test_keys_hash_to_the_shard_kinesis_picks() -> None:
    import hashlib

    assert hash_key("AAPL") == int(hashlib.md5(b"AAPL").hexdigest(), 16)  # Kinesis: MD5 of the key
    assert shard_for("AAPL", TWO_SHARDS) == ("shardId-0" if hash_key("AAPL") < HALF else "shardId-1")
    assert shard_for("AAPL", ()) is None


def test_a_bucket_gives_one_second_of_burst_then_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(1000, clock)
    assert bucket.take(1000) and not bucket.take(1)
    assert bucket.wait_for(250) == 0.25
    clock.now += 0.25
    assert bucket.take(250) and not bucket.take(1)
    clock.now += 10
    assert bucket.take(1000) and not bucket.take(1)  # banked at most one second
    small = TokenBucket(1000, clock, burst=0.1)
    assert small.take(100) and not small.take(1) and small.wait_for(500) == 0.1  # waits for a full bucket


@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from(["AAPL", "MSFT", "GOOG", "AMZN", "NVDA"]), st.integers(1, 40_000)),
                 min_size=1, max_size=60),
        min_size=1, max_size=80,
    )
)  # fmt: skip
def test_the_pacer_holds_every_shard_under_both_limits(calls: list[list[tuple[str, int]]]) -> None:
    clock = Clock()
    pacer = ShardPacer(TWO_SHARDS, clock=clock, sleep=clock.sleep)
    sent: list[tuple[float, str, int, int]] = []  # (time, shard, records, bytes) per call
    for entries in calls:
        pacer.before_put(entries)
        for shard in ("shardId-0", "shardId-1"):
            mine = [size for key, size in entries if shard_for(key, TWO_SHARDS) == shard]
            if mine:
                sent.append((clock.now, shard, len(mine), sum(mine)))
    # any one-second window: at most a second of burst plus a second of refill at the paced share
    for start, *_ in sent:
        for shard in ("shardId-0", "shardId-1"):
            window = [s for s in sent if s[1] == shard and start <= s[0] < start + 1.0]
            assert sum(s[2] for s in window) <= 2 * PACED_SHARE * RECORDS_PER_SECOND + 60
            assert sum(s[3] for s in window) <= 2 * PACED_SHARE * BYTES_PER_SECOND + 60 * 40_000
    total = sum(s[2] for s in sent)
    elapsed = clock.now - 100.0
    per_shard_limit = PACED_SHARE * RECORDS_PER_SECOND
    assert total <= 2 * per_shard_limit * (elapsed + 1) + 60  # long-run rate at the share


def test_the_pacer_banks_a_tenth_of_a_second_then_paces_at_the_share() -> None:
    clock = Clock()
    pacer = ShardPacer(TWO_SHARDS, clock=clock, sleep=clock.sleep)
    pacer.before_put([("AAPL", 100)] * 90)  # 0.1 s of 900 records/s: no wait
    assert clock.now == 100.0 and pacer.waited_seconds == 0
    for _ in range(90):
        pacer.before_put([("AAPL", 100)] * 10)
    assert abs((clock.now - 100.0) - 900 / 900) < 1e-9  # 900 more records at 900/s: one second
