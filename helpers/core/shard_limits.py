"""Kinesis' per-shard write limits, shared by the producer (which stays under them) and the local
stack (which enforces them as AWS does).

AWS: each shard takes up to 1,000 records and 1 MiB per second of writes (data plus partition
key); beyond that PutRecords fails the entries with ``ProvisionedThroughputExceededException``.
A record goes to the shard whose hash key range holds the MD5 of its partition key, so one
symbol is always one shard. :class:`TokenBucket` models a limit (one second of burst, refilled
continuously); :class:`ShardPacer` holds a producer to a share of both limits per shard.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "BYTES_PER_SECOND",
    "PACED_BURST_SECONDS",
    "PACED_SHARE",
    "RECORDS_PER_SECOND",
    "ShardPacer",
    "ShardRange",
    "TokenBucket",
    "hash_key",
    "shard_for",
]

RECORDS_PER_SECOND = 1_000
BYTES_PER_SECOND = 1_048_576
PACED_SHARE = 0.9  # the producer's target: 90 % of each limit, leaving room for clock skew
PACED_BURST_SECONDS = 0.1  # the producer banks little: its rate over any second stays at the share


def hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key (MD5, as an integer)."""
    return int(hashlib.md5(partition_key.encode("utf-8"), usedforsecurity=False).hexdigest(), 16)


@dataclass(frozen=True)
class ShardRange:
    shard_id: str
    start: int
    end: int  # inclusive


def shard_for(partition_key: str, shards: Sequence[ShardRange]) -> str | None:
    """The id of the open shard whose hash key range holds ``partition_key`` (None: no such shard)."""
    key = hash_key(partition_key)
    return next((s.shard_id for s in shards if s.start <= key <= s.end), None)


@dataclass
class TokenBucket:
    """``rate`` units per second, at most ``burst`` seconds of them banked (starts full)."""

    rate: float
    clock: Callable[[], float] = time.monotonic
    burst: float = 1.0
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.capacity = self.rate * self.burst
        self.tokens = self.capacity
        self.stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: float) -> bool:
        """Take ``amount`` if it is there (all or nothing)."""
        self._refill()
        if amount <= self.tokens:
            self.tokens -= amount
            return True
        return False

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is there (0 when it is); more than a burst waits for a full bucket."""
        self._refill()
        shortfall = min(amount, self.capacity) - self.tokens
        # a rounding-error shortfall is none: waiting it out could add nothing to a large clock
        return shortfall / self.rate if shortfall > 1e-9 * self.capacity else 0.0

    def spend(self, amount: float) -> None:
        """Take ``amount`` even if it overdraws (the next waits pay it back)."""
        self._refill()
        self.tokens -= amount


class ShardPacer:
    """Holds writes to :data:`PACED_SHARE` of each shard's record and byte limits.

    Its buckets bank only :data:`PACED_BURST_SECONDS`, so the rate over any second stays at the
    share (AWS's buckets take a second of burst; the local stack's do too).

    :meth:`before_put` is given the (partition key, size) of the entries about to be put in one
    call and sleeps until every shard they go to has room; keys of unknown shards are not paced.
    """

    def __init__(
        self,
        shards: Iterable[ShardRange],
        *,
        share: float = PACED_SHARE,
        burst: float = PACED_BURST_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.shards = tuple(shards)
        self._clock, self._sleep = clock, sleep
        self._records = {
            s.shard_id: TokenBucket(RECORDS_PER_SECOND * share, clock, burst) for s in self.shards
        }
        self._bytes = {s.shard_id: TokenBucket(BYTES_PER_SECOND * share, clock, burst) for s in self.shards}
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    def before_put(self, entries: Iterable[tuple[str, int]]) -> None:
        load: dict[str, list[int]] = {}
        for key, size in entries:
            shard = shard_for(key, self.shards)
            if shard is not None:
                counts = load.setdefault(shard, [0, 0])
                counts[0] += 1
                counts[1] += size
        with self._lock:
            while True:
                wait = max(
                    (
                        max(self._records[s].wait_for(n), self._bytes[s].wait_for(b))
                        for s, (n, b) in load.items()
                    ),
                    default=0.0,
                )
                if wait <= 0:
                    break
                self.waited_seconds += wait
                self._sleep(wait)
            for shard, (n, b) in load.items():
                self._records[shard].spend(n)
                self._bytes[shard].spend(b)
