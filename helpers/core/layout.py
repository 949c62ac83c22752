"""The storage layout, in one place: S3 keys of the raw archive, quarantine and manifests, the
partition folders Glue and Athena read, and the raw table's columns.

Pure (standard library only). Every key is derived from the shard and Kinesis sequence numbers,
never from time or a uuid, so an identical redelivery rewrites the same objects:

* ``raw/symbol=<SYM>/dt=<YYYY-MM-DD>/<shard>-<first seq of the group>.ndjson`` -- one object per
  (batch, partition), one :meth:`~helpers.core.quotes.Quote.to_json` line per record;
* ``quarantine/dt=<arrival date>/<shard>-<first seq>.ndjson`` -- reason, detail and the record;
* ``manifests/<shard>/<first seq of the batch>.json`` -- the committed sequence numbers;
* ``checkpoints/<shard>.json`` -- the shard's committed high-water mark (the processor's commit);
* ``parked/<shard>/<first seq>.ndjson`` -- valid records whose writes kept failing, with their
  bytes, to inspect and redrive.

The prefixes are arguments with these defaults, so callers holding settings pass
``settings.raw_prefix`` / ``settings.quarantine_prefix`` and this module needs no settings.
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
    "Partition",
    "checkpoint_key",
    "manifest_key",
    "parked_key",
    "partition_dir",
    "partitions_from_keys",
    "quarantine_key",
    "raw_key",
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
PARTITION_KEYS: tuple[tuple[str, str], ...] = (("symbol", "string"), ("dt", "string"))
"""Partition keys of the raw table, taken from the folder names (:func:`partition_dir`)."""
PARTITION_DIR = re.compile(r"symbol=(?P<symbol>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/")
"""Matches the partition folder of a raw-archive key (anywhere in the key)."""

Partition = tuple[str, str]
"""One partition of the raw table: ``(symbol, dt)``."""


def partition_dir(symbol: str, dt: str) -> str:
    """The folder of one partition under the raw prefix: ``symbol=<SYM>/dt=<YYYY-MM-DD>/``."""
    return f"symbol={symbol}/dt={dt}/"


def raw_key(symbol: str, dt: str, shard: str, first_seq: str, *, prefix: str = RAW_PREFIX) -> str:
    """Key of the raw object holding a batch's records of one (shard, symbol, dt)."""
    return f"{prefix}{partition_dir(symbol, dt)}{shard}-{first_seq}.ndjson"


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
    """The ``(symbol, dt)`` partitions of raw-archive object keys (other keys are ignored)."""
    found = set()
    for key in keys:
        match = PARTITION_DIR.search(key)
        if match:
            found.add((match["symbol"], match["dt"]))
    return found
