"""Read the processed price series back from DynamoDB, symbol by symbol, with Query.

The processed table is keyed (symbol, timestamp), so one symbol's series is one paged Query in
timestamp order. Without a symbol list, the symbols are found first with a Scan that projects
the key only. pandas is imported inside :func:`processed_frame` (this module ships in Lambda).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from helpers.core.errors import ResourceMissingError
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = ["processed_bars", "processed_frame", "processed_items", "symbols_in_table"]

log = logging.getLogger(__name__)

_INTEGER_FIELDS = ("volume",)


def _plain(name: str, value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if name in _INTEGER_FIELDS else float(value)
    return value


def _missing(err: ClientError, table: str) -> Exception:
    if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
        return ResourceMissingError(f"DynamoDB table {table} does not exist: run 01_provision first")
    return err


def symbols_in_table(settings: Settings | None = None, *, dynamodb: Any = None) -> list[str]:
    """The distinct symbols of the processed table (a key-only Scan), sorted."""
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    found: set[str] = set()
    try:
        pages = dynamodb.get_paginator("scan").paginate(
            TableName=s.table_name, ProjectionExpression="#s", ExpressionAttributeNames={"#s": "symbol"}
        )
        for page in pages:
            found.update(item["symbol"]["S"] for item in page.get("Items", []))
    except ClientError as err:
        raise _missing(err, s.table_name) from err
    return sorted(found)


def processed_items(settings: Settings | None, symbol: str, *, dynamodb: Any = None) -> list[dict[str, Any]]:
    """Every processed item of ``symbol`` in timestamp order, numbers as float (volume as int)."""
    from boto3.dynamodb.types import TypeDeserializer

    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    plain = TypeDeserializer()
    rows: list[dict[str, Any]] = []
    try:
        pages = dynamodb.get_paginator("query").paginate(
            TableName=s.table_name,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "symbol"},
            ExpressionAttributeValues={":s": {"S": symbol}},
        )
        for page in pages:
            for item in page.get("Items", []):
                rows.append({k: _plain(k, plain.deserialize(v)) for k, v in item.items()})
    except ClientError as err:
        raise _missing(err, s.table_name) from err
    return rows


def processed_bars(
    settings: Settings | None, symbol: str, *, dynamodb: Any = None
) -> list[tuple[str, float]]:
    """``(timestamp, price)`` bars of ``symbol`` in order: the input of ``indicators.crossovers``."""
    return [(row["timestamp"], row["price"]) for row in processed_items(settings, symbol, dynamodb=dynamodb)]


def processed_frame(
    settings: Settings | None = None, symbols: Iterable[str] | None = None, *, dynamodb: Any = None
) -> Any:
    """The processed series of ``symbols`` (default: every symbol in the table) as a DataFrame.

    Sorted by symbol and timestamp; numbers as float, volume as int.
    """
    import pandas as pd

    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    wanted = sorted(set(symbols)) if symbols is not None else symbols_in_table(s, dynamodb=dynamodb)
    rows = [row for symbol in wanted for row in processed_items(s, symbol, dynamodb=dynamodb)]
    log.info("read %d processed bars of %d symbol(s) from %s", len(rows), len(wanted), s.table_name)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["symbol", "timestamp", "price"])
    return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)
