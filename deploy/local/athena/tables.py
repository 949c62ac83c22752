"""Where the local Athena engine finds its tables: the Glue catalog and the S3 objects under them.

The catalog is read through the local stack's own public endpoint (boto3 for Glue), so the engine
sees the tables and partitions any AWS client sees. Objects are listed and read from moto's S3
backend in the same process (:class:`InProcessObjects`, what the stack's Athena component
uses): a query over 2,000 objects was 2,000 HEAD + GET round trips through moto's routing, 86 %
of the engine's time at 1M records. Outside the stack (a Warehouse built on an endpoint alone)
objects go through s3fs and the endpoint. Either way each object comes with its ETag, which is
what the engine's scan cache is keyed by (:mod:`deploy.local.athena.cache`).
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from deploy.local.faults.injector import INTERNAL_AGENT

log = logging.getLogger(__name__)

DEFAULT_CATALOG = "awsdatacatalog"
JSON_SERDES = ("org.openx.data.jsonserde.JsonSerDe", "org.apache.hive.hcatalog.data.JsonSerDe")
PARQUET_SERDES = ("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",)


@dataclass(frozen=True)
class S3Object:
    """One object to scan: ``bucket/key`` path (s3fs style), its size in bytes and its ETag."""

    path: str
    size: int
    etag: str = ""


@dataclass(frozen=True)
class Partition:
    values: tuple[str, ...]
    location: str


@dataclass(frozen=True)
class TableDef:
    """The parts of a Glue table the engine needs."""

    database: str
    name: str
    location: str
    columns: tuple[tuple[str, str], ...]
    partition_keys: tuple[tuple[str, str], ...]
    serde: str
    serde_parameters: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def format(self) -> str:
        if self.serde in JSON_SERDES:
            return "json"
        if self.serde in PARQUET_SERDES:
            return "parquet"
        return "unsupported"

    @property
    def projected(self) -> bool:
        return self.parameters.get("projection.enabled", "").lower() == "true"

    @property
    def qualified(self) -> str:
        return f"{DEFAULT_CATALOG}.{self.database}.{self.name}"


def s3_path(uri: str) -> str:
    """``s3://bucket/key`` → ``bucket/key`` (s3fs paths)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a", "s3n") or not parsed.netloc:
        raise ValueError(f"not an S3 location: {uri!r}")
    return f"{parsed.netloc}/{parsed.path.lstrip('/')}"


def _hidden(path: str) -> bool:
    """Athena skips files whose name starts with ``_`` or ``.`` (and folder markers)."""
    name = posixpath.basename(path)
    return not name or name.startswith(("_", "."))


class InProcessObjects:
    """Lists and reads objects straight from moto's S3 backend (the stack's own, in this process).

    Listing takes a snapshot of the bucket's key names (moto's request threads may add keys
    meanwhile); an object deleted between listing and reading is read as missing. Delete markers
    and non-current versions are not objects.
    """

    def __init__(self, account: str | None = None) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID

        self.account = account or DEFAULT_ACCOUNT_ID

    def _bucket(self, name: str) -> Any:
        from moto.s3.models import s3_backends

        return s3_backends[self.account]["aws"].buckets.get(name)

    def bucket_exists(self, name: str) -> bool:
        return self._bucket(name) is not None

    def find(self, prefix: str) -> list[S3Object]:
        from moto.s3.models import FakeKey

        bucket_name, _, key_prefix = prefix.partition("/")
        bucket = self._bucket(bucket_name)
        if bucket is None:
            raise FileNotFoundError(f"The specified bucket does not exist: {bucket_name}")
        found = []
        for name in list(dict.keys(bucket.keys)):
            if name.startswith(key_prefix):
                key = bucket.keys.get(name)
                if isinstance(key, FakeKey):
                    found.append(S3Object(f"{bucket_name}/{name}", int(key.size), str(key.etag)))
        return found

    def read(self, objects: Sequence[S3Object]) -> dict[str, bytes]:
        data = {}
        for obj in objects:
            bucket_name, _, name = obj.path.partition("/")
            bucket = self._bucket(bucket_name)
            key = bucket.keys.get(name) if bucket is not None else None
            if key is None:
                raise FileNotFoundError(f"The specified key does not exist: s3://{obj.path}")
            data[obj.path] = bytes(key.value)
        return data


class Warehouse:
    """Glue tables and their S3 objects: the catalog through the endpoint, objects as ``objects`` says.

    ``objects``: an :class:`InProcessObjects` when the caller runs inside the stack's process;
    None reads them through the endpoint with s3fs.
    """

    def __init__(self, endpoint: str, region: str, *, objects: InProcessObjects | None = None) -> None:
        self.endpoint = endpoint
        self.region = region
        self.in_process = objects
        self._lock = threading.Lock()
        self._glue: Any = None
        self._fs: Any = None

    # --- clients -----------------------------------------------------------------------
    @property
    def glue(self) -> Any:
        with self._lock:
            if self._glue is None:
                import boto3
                from botocore.config import Config

                from deploy.local.access import internal_credentials

                session = boto3.session.Session(region_name=self.region, **internal_credentials())
                self._glue = session.client(
                    "glue",
                    endpoint_url=self.endpoint,
                    config=Config(retries={"mode": "standard"}, user_agent_extra=INTERNAL_AGENT),
                )
            return self._glue

    @property
    def fs(self) -> Any:
        with self._lock:
            if self._fs is None:
                import s3fs

                from deploy.local.access import internal_credentials

                keys = internal_credentials()  # the stack's own reads
                self._fs = s3fs.S3FileSystem(
                    key=keys["aws_access_key_id"],
                    secret=keys["aws_secret_access_key"],
                    endpoint_url=self.endpoint,
                    client_kwargs={"region_name": self.region},
                    config_kwargs={"user_agent_extra": INTERNAL_AGENT},  # not hit by fault plans
                    use_listings_cache=False,
                    skip_instance_cache=True,
                )
            return self._fs

    def close(self) -> None:
        with self._lock:
            if self._glue is not None:
                self._glue.close()
            self._glue = None
            self._fs = None

    # --- catalog -----------------------------------------------------------------------
    def database_exists(self, name: str) -> bool:
        try:
            self.glue.get_database(Name=name)
        except self.glue.exceptions.EntityNotFoundException:
            return False
        return True

    def databases(self) -> list[str]:
        names: list[str] = []
        for page in self.glue.get_paginator("get_databases").paginate():
            names.extend(db["Name"] for db in page["DatabaseList"])
        return sorted(names)

    def tables(self, database: str) -> list[str]:
        names: list[str] = []
        for page in self.glue.get_paginator("get_tables").paginate(DatabaseName=database):
            names.extend(t["Name"] for t in page["TableList"])
        return sorted(names)

    def table(self, database: str, name: str) -> TableDef | None:
        """The table, or None if the database or the table does not exist."""
        try:
            raw = self.glue.get_table(DatabaseName=database, Name=name)["Table"]
        except self.glue.exceptions.EntityNotFoundException:
            return None
        sd = raw.get("StorageDescriptor", {})
        serde = sd.get("SerdeInfo", {})
        return TableDef(
            database=database,
            name=raw["Name"],
            location=sd.get("Location", ""),
            columns=tuple((c["Name"].lower(), c["Type"]) for c in sd.get("Columns", [])),
            partition_keys=tuple((c["Name"].lower(), c["Type"]) for c in raw.get("PartitionKeys", [])),
            serde=serde.get("SerializationLibrary", ""),
            serde_parameters=dict(serde.get("Parameters", {})),
            parameters=dict(raw.get("Parameters", {})),
        )

    def partitions(self, table: TableDef) -> list[Partition]:
        """Registered partitions (projected tables: the ``key=value`` folders found under the location)."""
        if table.projected:
            return self._projected_partitions(table)
        found = []
        paginator = self.glue.get_paginator("get_partitions")
        for page in paginator.paginate(DatabaseName=table.database, TableName=table.name):
            for p in page["Partitions"]:
                location = p.get("StorageDescriptor", {}).get("Location", "")
                found.append(Partition(tuple(p["Values"]), location))
        return sorted(found, key=lambda p: p.values)

    def _projected_partitions(self, table: TableDef) -> list[Partition]:
        keys = [k for k, _ in table.partition_keys]
        base = s3_path(table.location).rstrip("/") + "/"
        seen: dict[tuple[str, ...], str] = {}
        for obj in self.objects([table.location]):
            parts = obj.path[len(base) :].split("/")[: len(keys)]
            if len(parts) == len(keys) and all(
                p.startswith(f"{k}=") for p, k in zip(parts, keys, strict=True)
            ):
                values = tuple(p.split("=", 1)[1] for p in parts)
                seen.setdefault(values, "s3://" + base + "/".join(parts) + "/")
        return [Partition(v, loc) for v, loc in sorted(seen.items())]

    # --- objects -----------------------------------------------------------------------
    def objects(self, locations: Iterable[str]) -> list[S3Object]:
        """Data files under each location (recursively), hidden files skipped, each listed once."""
        found: dict[str, S3Object] = {}
        for location in locations:
            prefix = s3_path(location)
            if not prefix.endswith("/"):
                prefix += "/"
            if self.in_process is not None:
                for obj in self.in_process.find(prefix):
                    if not _hidden(obj.path):
                        found.setdefault(obj.path, obj)
                continue
            bucket = prefix.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise FileNotFoundError(f"The specified bucket does not exist: {bucket}")
            for path, info in self.fs.find(prefix, detail=True).items():
                if info.get("type") == "file" and path.startswith(prefix) and not _hidden(path):
                    etag = str(info.get("ETag") or info.get("etag") or "")
                    found.setdefault(path, S3Object(path, int(info.get("size") or 0), etag))
        return sorted(found.values(), key=lambda o: o.path)

    def read(self, objects: Sequence[S3Object]) -> dict[str, bytes]:
        """The bytes of each object (in process, or fetched concurrently through the endpoint)."""
        if not objects:
            return {}
        if self.in_process is not None:
            return self.in_process.read(objects)
        data = self.fs.cat([o.path for o in objects], on_error="raise")
        return dict(data) if isinstance(data, dict) else {objects[0].path: data}

    def get(self, uri: str) -> bytes:
        return bytes(self.fs.cat_file(s3_path(uri)))

    def put(self, uri: str, data: bytes) -> None:
        path = s3_path(uri)
        bucket = path.split("/", 1)[0]
        if not self.fs.exists(bucket):
            raise FileNotFoundError(f"Unable to verify/create output bucket {bucket}")
        self.fs.pipe_file(path, data)
