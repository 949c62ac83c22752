"""Where the local Athena engine finds its tables: the Glue catalog and the S3 objects under them.

Both are reached through the local stack's own public endpoint (boto3 for Glue, s3fs for S3),
never through moto's in-process internals: the engine sees exactly what any AWS client sees,
and moto can change its internals freely. The stack's HTTP server is threaded, so these calls
from the engine's worker threads are served concurrently with the client's requests.
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
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class S3Object:
    """One object to scan: ``bucket/key`` path (s3fs style) and its size in bytes."""

    path: str
    size: int


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


class Warehouse:
    """Glue tables and their S3 objects, read through the local stack's endpoint."""

    def __init__(self, endpoint: str, region: str) -> None:
        self.endpoint = endpoint
        self.region = region
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

                session = boto3.session.Session(region_name=self.region, **LOCAL_CREDENTIALS)
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

                self._fs = s3fs.S3FileSystem(
                    key=LOCAL_CREDENTIALS["aws_access_key_id"],
                    secret=LOCAL_CREDENTIALS["aws_secret_access_key"],
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
            bucket = prefix.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise FileNotFoundError(f"The specified bucket does not exist: {bucket}")
            for path, info in self.fs.find(prefix, detail=True).items():
                if info.get("type") == "file" and path.startswith(prefix) and not _hidden(path):
                    found.setdefault(path, S3Object(path, int(info.get("size") or 0)))
        return sorted(found.values(), key=lambda o: o.path)

    def read(self, objects: Sequence[S3Object]) -> dict[str, bytes]:
        """The bytes of each object, fetched concurrently."""
        if not objects:
            return {}
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
