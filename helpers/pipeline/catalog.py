"""The Glue table over the raw archive, so Athena can query the NDJSON the processor writes.

Layout (the processor's contract, defined once in :mod:`helpers.core.layout` with the columns):
``s3://<raw_bucket>/raw/symbol=<SYM>/year=<YYYY>/<batch>.ndjson``, one quote object per line.
The table maps every quote field except ``symbol`` to a column (``symbol`` and ``year``, the
quote's UTC year, are partition keys, taken from the path) and reads the lines with the OpenX JSON
SerDe. A query filtering on ``"timestamp"`` also filters on ``year`` so Athena prunes (see
:func:`helpers.core.layout.partition_values`).

Partition strategy: **registered partitions**. Partition projection cannot describe this
layout for arbitrary symbols — an ``enum`` needs the symbol list up front and ``injected``
makes Athena reject every query without ``WHERE symbol = ...`` (the analysis aggregates across
symbols). So each ``(symbol, year)`` directory is registered in Glue, idempotently:

* the processor may call :func:`register_partitions` for the partitions of the objects it
  wrote (its role may ``glue:BatchCreatePartition``);
* before querying, :func:`sync_partitions` lists the archive and registers what is missing
  (the equivalent of ``MSCK REPAIR TABLE``, without a query).

stdlib + boto3 only: importable inside Lambda.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from helpers.core.errors import PipelineError, ResourceMissingError
from helpers.core.layout import DATA_COLUMNS, PARTITION_KEYS, Partition, partition_dir, partitions_from_keys
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "BATCH_CREATE_PARTITION_MAX",
    "DATA_COLUMNS",
    "PARTITION_KEYS",
    "SERDE",
    "CatalogError",
    "Partition",
    "create_table_ddl",
    "discover_partitions",
    "ensure_table",
    "partition_location",
    "partitions_from_keys",
    "register_partitions",
    "sync_partitions",
    "table_input",
]

log = logging.getLogger(__name__)

BATCH_CREATE_PARTITION_MAX = 100  # Glue's limit of PartitionInputList entries per call
SERDE = "org.openx.data.jsonserde.JsonSerDe"
INPUT_FORMAT = "org.apache.hadoop.mapred.TextInputFormat"
OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
_COMMENTS = {
    "timestamp": "quote time, UTC, canonical 2026-07-29T13:30:00Z",
    "produced_at": "time the producer emitted the quote, UTC, canonical form",
    "symbol": "ticker symbol (partition)",
    "year": "quote year YYYY, UTC (partition)",
}


class CatalogError(PipelineError):
    """Glue refused to register a partition of the raw table."""


def _column(name: str, type_: str) -> dict[str, str]:
    column = {"Name": name, "Type": type_}
    if name in _COMMENTS:
        column["Comment"] = _COMMENTS[name]
    return column


def _storage(location: str) -> dict[str, Any]:
    return {
        "Location": location,
        "InputFormat": INPUT_FORMAT,
        "OutputFormat": OUTPUT_FORMAT,
        "Compressed": False,
        "SerdeInfo": {"SerializationLibrary": SERDE, "Parameters": {"serialization.format": "1"}},
    }


def table_input(settings: Settings | None = None) -> dict[str, Any]:
    """The Glue ``TableInput`` of the raw quotes table (external, JSON, partitioned by symbol and year)."""
    s = settings or load_settings()
    return {
        "Name": s.glue_table,
        "Description": "Raw quotes archived by the processor Lambda (NDJSON, one object per batch)",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"EXTERNAL": "TRUE", "classification": "json", "typeOfData": "file"},
        "PartitionKeys": [_column(n, t) for n, t in PARTITION_KEYS],
        "StorageDescriptor": {
            **_storage(s.raw_location),
            "Columns": [_column(n, t) for n, t in DATA_COLUMNS],
        },
    }


def create_table_ddl(settings: Settings | None = None) -> str:
    """The Athena DDL equivalent to :func:`table_input` (shown in the analysis notebook)."""
    s = settings or load_settings()
    columns = ",\n".join(f"  `{n}` {t}" for n, t in DATA_COLUMNS)
    partitions = ", ".join(f"`{n}` {t}" for n, t in PARTITION_KEYS)
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS `{s.glue_database}`.`{s.glue_table}` (\n{columns}\n)\n"
        f"PARTITIONED BY ({partitions})\n"
        f"ROW FORMAT SERDE '{SERDE}'\n"
        f"STORED AS INPUTFORMAT '{INPUT_FORMAT}'\n"
        f"OUTPUTFORMAT '{OUTPUT_FORMAT}'\n"
        f"LOCATION '{s.raw_location}'\n"
        "TBLPROPERTIES ('classification'='json')"
    )


def _ensure_database(s: Settings, glue: Any) -> None:
    try:
        glue.get_database(Name=s.glue_database)
    except ClientError as err:
        if aws.error_code(err) != "EntityNotFoundException":
            raise
        try:
            glue.create_database(
                DatabaseInput={
                    "Name": s.glue_database,
                    "Description": "Stock trend pipeline raw quote archive",
                }
            )
            log.info("created Glue database %s", s.glue_database)
        except ClientError as race:
            if aws.error_code(race) != "AlreadyExistsException":
                raise


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    sd, want_sd = current.get("StorageDescriptor", {}), wanted["StorageDescriptor"]
    return (
        current.get("TableType") != wanted["TableType"]
        or current.get("PartitionKeys", []) != wanted["PartitionKeys"]
        or sd.get("Columns", []) != want_sd["Columns"]
        or sd.get("Location") != want_sd["Location"]
        or sd.get("SerdeInfo", {}).get("SerializationLibrary") != SERDE
        or any(current.get("Parameters", {}).get(k) != v for k, v in wanted["Parameters"].items())
    )


def ensure_table(settings: Settings | None = None, glue: Any = None) -> str:
    """Create the database and table if missing, update the table if it drifted.

    Returns what was done: ``"created"``, ``"updated"`` or ``"unchanged"``. Idempotent.
    """
    s = settings or load_settings()
    glue = glue or aws.client("glue", s)
    _ensure_database(s, glue)
    wanted = table_input(s)
    try:
        current = glue.get_table(DatabaseName=s.glue_database, Name=s.glue_table)["Table"]
    except ClientError as err:
        if aws.error_code(err) != "EntityNotFoundException":
            raise
        try:
            glue.create_table(DatabaseName=s.glue_database, TableInput=wanted)
        except ClientError as race:
            if aws.error_code(race) != "AlreadyExistsException":
                raise
            return "unchanged"
        log.info("created Glue table %s.%s", s.glue_database, s.glue_table)
        return "created"
    if not _differs(current, wanted):
        return "unchanged"
    glue.update_table(DatabaseName=s.glue_database, TableInput=wanted)
    log.info("updated Glue table %s.%s", s.glue_database, s.glue_table)
    return "updated"


def partition_location(settings: Settings, partition: Partition) -> str:
    """S3 folder of one partition, ``s3://<raw_bucket>/raw/symbol=<SYM>/year=<YYYY>/``."""
    return f"{settings.raw_location}{partition_dir(*partition)}"


def register_partitions(settings: Settings | None, partitions: Iterable[Partition], glue: Any = None) -> int:
    """Register ``(symbol, year)`` partitions in Glue; existing ones are left alone.

    Returns how many were newly created. Safe to call repeatedly and concurrently (Glue answers
    ``AlreadyExistsException`` per entry, which is the expected outcome for known partitions).
    """
    s = settings or load_settings()
    wanted = sorted(set(partitions))
    if not wanted:
        return 0
    glue = glue or aws.client("glue", s)
    sd = table_input(s)["StorageDescriptor"]
    created = 0
    for start in range(0, len(wanted), BATCH_CREATE_PARTITION_MAX):
        chunk = wanted[start : start + BATCH_CREATE_PARTITION_MAX]
        entries = [
            {"Values": list(p), "StorageDescriptor": {**sd, "Location": partition_location(s, p)}}
            for p in chunk
        ]
        response = glue.batch_create_partition(
            DatabaseName=s.glue_database, TableName=s.glue_table, PartitionInputList=entries
        )
        errors = response.get("Errors", [])
        unexpected = [
            e for e in errors if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"
        ]
        if unexpected:
            detail = unexpected[0].get("ErrorDetail", {})
            raise CatalogError(
                f"Glue refused partition {unexpected[0].get('PartitionValues')} of "
                f"{s.glue_database}.{s.glue_table}: {detail.get('ErrorCode')}: {detail.get('ErrorMessage')}; "
                "check the table with catalog.ensure_table(settings) (run 01_provision first), "
                "then catalog.sync_partitions(settings)"
            )
        created += len(chunk) - len(errors)
    if created:
        log.info("registered %d new partition(s) of %s.%s", created, s.glue_database, s.glue_table)
    return created


def discover_partitions(settings: Settings | None = None, s3: Any = None) -> set[Partition]:
    """The ``(symbol, year)`` folders present in the raw archive (two delimiter listings per symbol)."""
    s = settings or load_settings()
    s3 = s3 or aws.client("s3", s)
    paginator = s3.get_paginator("list_objects_v2")
    found: set[Partition] = set()
    try:
        for page in paginator.paginate(Bucket=s.raw_bucket, Prefix=s.raw_prefix, Delimiter="/"):
            for symbol_prefix in page.get("CommonPrefixes", []):
                for sub in paginator.paginate(
                    Bucket=s.raw_bucket, Prefix=symbol_prefix["Prefix"], Delimiter="/"
                ):
                    found |= partitions_from_keys(p["Prefix"] for p in sub.get("CommonPrefixes", []))
    except ClientError as err:
        if aws.is_missing(err, "NoSuchBucket"):
            raise ResourceMissingError(
                f"S3 bucket {s.raw_bucket} does not exist: run 01_provision first"
            ) from err
        raise
    return found


def sync_partitions(settings: Settings | None = None, glue: Any = None, s3: Any = None) -> int:
    """Register every partition present in the archive; returns how many were new."""
    s = settings or load_settings()
    return register_partitions(s, discover_partitions(s, s3), glue)
