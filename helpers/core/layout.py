"""The storage layout, in one place: S3 keys of the raw archive, quarantine and manifests, the
partition folders Glue and Athena read, and the raw table's columns.

Pure (standard library only). Every key is derived from the shard and Kinesis sequence numbers,
never from time or a uuid, so an identical redelivery rewrites the same objects:

* ``raw/symbol=<SYM>/year=<YYYY>/<shard>-<first seq of the group>.ndjson`` -- one object per
  (batch, partition), one :meth:`~helpers.core.quotes.Quote.to_json` line per record, the
  partition being the quote's symbol and UTC year (:func:`raw_partition`);
* ``quarantine/dt=<arrival date>/<shard>-<first seq>.ndjson`` -- reason, detail and the record;
* ``manifests/<shard>/<first seq of the batch>.json`` -- the committed sequence numbers;
* ``checkpoints/<shard>.json`` -- the shard's committed high-water mark (the processor's commit);
* ``parked/<shard>/<first seq>.ndjson`` -- valid records whose writes kept failing, with their
  bytes, to inspect and redrive.

The prefixes are arguments with these defaults, so callers holding settings pass
``settings.raw_prefix`` / ``settings.quarantine_prefix`` and this module needs no settings.

Why the bar's **year**: objects grow with batches, not bars, whatever the bar interval. A
500-record batch of intraday bars falls in one year (one object per symbol, as a day or a month
would); a batch of the 14-year ``daily`` replay (about 100 bars per symbol, 5 months) makes at most
one or two objects per symbol -- 4 per batch and 98 objects, 54 partitions in all for its 12,154
bars, where ``dt=<day>`` made 12,154 of each and ``month=<YYYY-MM>`` would make 24 per batch, 623
objects and 586 partitions. The price is pruning resolution: a query over one day reads that day's
year (252 daily bars, or about 98,000 one-minute bars a symbol for a full year of them; a month
would read 21 or 8,200). A query filtering on time adds ``year IN (...)`` of
:func:`partition_values` to its timestamp filter so engines prune; the bar's date is the
``substr("timestamp", 1, 10)`` of the data, not a partition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "CHECKPOINT_PREFIX",
    "DATA_COLUMNS",
    "MANIFEST_PREFIX",
    "PARKED_PREFIX",
    "PARTITION_DIR",
    "PARTITION_KEYS",
    "QUARANTINE_PREFIX",
    "RAW_PREFIX",
    "TIME_PARTITION",
    "Partition",
    "checkpoint_key",
    "manifest_key",
    "parked_key",
    "partition_dir",
    "partition_values",
    "partitions_from_keys",
    "quarantine_key",
    "raw_key",
    "raw_partition",
]

RAW_PREFIX = "raw/"
QUARANTINE_PREFIX = "quarantine/"
MANIFEST_PREFIX = "manifests/"
CHECKPOINT_PREFIX = "checkpoints/"
PARKED_PREFIX = "parked/"

DATA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("timestamp", "string"),
    ("price", "double"),
    ("previous_close", "double"),
    ("open", "double"),
    ("high", "double"),
    ("low", "double"),
    ("volume", "bigint"),
    ("source", "string"),
    ("produced_at", "string"),
)
"""Columns of the raw table: every quote field but ``symbol``, in NDJSON line order."""
TIME_PARTITION = "year"
"""The partition key a time filter prunes on (values from :func:`partition_values`)."""
PARTITION_KEYS: tuple[tuple[str, str], ...] = (("symbol", "string"), (TIME_PARTITION, "string"))
"""Partition keys of the raw table, taken from the folder names (:func:`partition_dir`)."""
PARTITION_DIR = re.compile(r"symbol=(?P<symbol>[^/]+)/year=(?P<year>\d{4})/")
"""Matches the partition folder of a raw-archive key (anywhere in the key)."""

Partition = tuple[str, str]
"""One partition of the raw table: ``(symbol, year)``."""


def raw_partition(symbol: str, timestamp: str) -> Partition:
    """The partition of a quote: its symbol and the UTC year of its canonical ``timestamp``."""
    return symbol, timestamp[:4]


def partition_values(start: str, end: str) -> list[str]:
    """The ``year`` values a time filter ``start <= "timestamp" < end`` can touch, in order.

    ``start``/``end`` are canonical timestamps or a leading part of one (``2013``, ``2013-05-01``),
    compared as text like the column: a year is kept when its first instant is below ``end`` and
    its last at or above ``start``. Empty when nothing can match.
    """
    years = range(int(start[:4]), int(end[:4]) + 1)
    return [
        f"{y:04d}" for y in years if f"{y:04d}-01-01T00:00:00Z" < end and f"{y:04d}-12-31T23:59:59Z" >= start
    ]


def partition_dir(symbol: str, year: str) -> str:
    """The folder of one partition under the raw prefix: ``symbol=<SYM>/year=<YYYY>/``."""
    return f"symbol={symbol}/year={year}/"


def raw_key(symbol: str, year: str, shard: str, first_seq: str, *, prefix: str = RAW_PREFIX) -> str:
    """Key of the raw object holding a batch's records of one (shard, symbol, year)."""
    return f"{prefix}{partition_dir(symbol, year)}{shard}-{first_seq}.ndjson"


def quarantine_key(dt: str, shard: str, first_seq: str, *, prefix: str = QUARANTINE_PREFIX) -> str:
    """Key of the quarantine object of a batch's rejected records of one (shard, arrival date)."""
    return f"{prefix}dt={dt}/{shard}-{first_seq}.ndjson"


def manifest_key(shard: str, first_seq: str) -> str:
    """Key of the manifest of one shard's part of a batch, named by its first sequence number."""
    return f"{MANIFEST_PREFIX}{shard}/{first_seq}.json"


def checkpoint_key(shard: str) -> str:
    """Key of a shard's checkpoint: the last committed record and the attempts of failing ones."""
    return f"{CHECKPOINT_PREFIX}{shard}.json"


def parked_key(shard: str, first_seq: str) -> str:
    """Key of the parked records of one shard's part of a batch, named by its first record."""
    return f"{PARKED_PREFIX}{shard}/{first_seq}.ndjson"


def partitions_from_keys(keys: Iterable[str]) -> set[Partition]:
    """The ``(symbol, year)`` partitions of raw-archive object keys (other keys are ignored)."""
    found = set()
    for key in keys:
        match = PARTITION_DIR.search(key)
        if match:
            found.add((match["symbol"], match["year"]))
    return found
