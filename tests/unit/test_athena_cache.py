"""The local Athena engine over moto's S3 backend in process, with its scan cache.

Objects live in moto's in-process S3 backend (what the stack's Athena component reads); the
Glue side is a fixed table with two partitions. Each object is parsed once until its ETag
changes; answers are checked against the rows written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.athena.cache import ScanCache
from deploy.local.athena.engine import Engine
from deploy.local.athena.tables import InProcessObjects, Partition, TableDef, Warehouse

JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"


class FixedCatalog(Warehouse):
    """One Glue table partitioned by symbol; objects from moto's S3 backend in this process."""

    def __init__(self, bucket: str, symbols: list[str]) -> None:
        super().__init__("http://127.0.0.1:9", "us-east-1", objects=InProcessObjects())
        self.bucket, self.symbols = bucket, symbols
        self.listed = 0

    def table(self, database: str, name: str) -> TableDef | None:
        return TableDef(
            database, name, f"s3://{self.bucket}/raw/",
            (("symbol", "string"), ("price", "double")), (("part", "string"),), JSON_SERDE,
        )  # fmt: skip

    def partitions(self, table: TableDef) -> list[Partition]:
        return [Partition((s,), f"s3://{self.bucket}/raw/part={s}/") for s in self.symbols]

    def objects(self, locations: Any) -> Any:
        self.listed += 1
        return super().objects(locations)


@pytest.fixture
def s3() -> Iterator[tuple[Any, str]]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    bucket = f"cache-test-{uuid.uuid4().hex[:8]}"
    backend.create_bucket(bucket, "us-east-1")
    yield backend, bucket
    for key in list(backend.buckets[bucket].keys):
        backend.delete_object(bucket, key)
    backend.delete_bucket(bucket)


def _put(backend: Any, bucket: str, key: str, rows: list[tuple[str, float]]) -> None:
    body = "".join(json.dumps({"symbol": s, "price": p}) + "\n" for s, p in rows).encode()
    backend.put_object(bucket, key, body)


def _sum(engine: Engine, where: str = "") -> list[tuple[str | None, ...]]:
    result = engine.run(
        f"SELECT symbol, count(*), sum(price) FROM raw {where} GROUP BY 1 ORDER BY 1", database="db"
    )
    return result.rows


def test_each_object_is_parsed_once_until_its_etag_changes(s3: tuple[Any, str], tmp_path: Path) -> None:
    backend, bucket = s3
    for n in range(6):
        _put(backend, bucket, f"raw/part=A/{n}.ndjson", [("A", 1.0 + n), ("A", 2.0)])
        _put(backend, bucket, f"raw/part=B/{n}.ndjson", [("B", 10.0)])
    _put(backend, bucket, "raw/part=A/_SUCCESS", [("A", 1000.0)])  # hidden: never read
    cache = ScanCache(tmp_path / "cache")
    engine = Engine(FixedCatalog(bucket, ["A", "B"]), tmp_path, cache=cache)

    # GIVEN a first query: every object parsed
    assert _sum(engine) == [("A", "12", "33.0"), ("B", "6", "60.0")]
    assert (cache.misses, cache.hits) == (12, 0)

    # WHEN the same objects are queried again, pruned to one partition, and in full THEN nothing is parsed
    assert _sum(engine, "WHERE part = 'B'") == [("B", "6", "60.0")]  # the segment also holds A: joined away
    assert _sum(engine) == [("A", "12", "33.0"), ("B", "6", "60.0")]
    assert (cache.misses, cache.hits) == (12, 6 + 12)

    # WHEN one object is rewritten (a trim) and one added THEN the answer has them, the stale rows do not
    _put(backend, bucket, "raw/part=A/0.ndjson", [("A", 100.0)])
    _put(backend, bucket, "raw/part=B/new.ndjson", [("B", 5.0), ("B", 5.0)])
    assert _sum(engine) == [("A", "11", "130.0"), ("B", "8", "70.0")]
    assert cache.misses == 12 + 13  # the segment holding the rewritten object is parsed again, + the new one
    assert cache.stats()["segments"] == 1 and cache.stats()["rows"] == 19

    # WHEN an object is deleted THEN its rows leave the answer without any parsing
    backend.delete_object(bucket, "raw/part=B/new.ndjson")
    assert _sum(engine) == [("A", "11", "130.0"), ("B", "6", "60.0")]
    assert cache.misses == 25


def test_bad_json_names_the_s3_object_and_is_not_cached(s3: tuple[Any, str], tmp_path: Path) -> None:
    from deploy.local.athena.sql import QueryFailed

    backend, bucket = s3
    _put(backend, bucket, "raw/part=A/good.ndjson", [("A", 1.0)])
    backend.put_object(bucket, "raw/part=A/bad.ndjson", b'{"symbol": "A", "price": \n')
    cache = ScanCache(tmp_path / "cache")
    engine = Engine(FixedCatalog(bucket, ["A"]), tmp_path, cache=cache)
    with pytest.raises(QueryFailed) as err:
        _sum(engine)
    assert err.value.name == "HIVE_BAD_DATA" and f"s3://{bucket}/raw/part=A/bad.ndjson" in str(err.value)
    assert cache.stats()["segments"] == 0


def test_in_process_objects_list_with_etags_and_refuse_a_missing_bucket(s3: tuple[Any, str]) -> None:
    backend, bucket = s3
    _put(backend, bucket, "raw/part=A/1.ndjson", [("A", 1.0)])
    store = InProcessObjects()
    (obj,) = store.find(f"{bucket}/raw/")
    assert obj.path == f"{bucket}/raw/part=A/1.ndjson" and obj.size == 30 and len(obj.etag.strip('"')) == 32
    assert store.read([obj]) == {obj.path: b'{"symbol": "A", "price": 1.0}\n'}
    with pytest.raises(FileNotFoundError, match="bucket does not exist: nope-"):
        store.find(f"nope-{bucket}/x/")
